"""Sharing a fitted Hat EBM (or latent-prior run) on the Hugging Face Hub: ``hatrefine push``.

The repository holds what ``HatRefiner.from_pretrained("hf:ORG/NAME")`` needs —
``config.json`` and ``hat.safetensors`` (a latent-prior run: ``prior.safetensors``, loaded by
``LatentPriorRefiner``; ``sample --run hf:ORG/NAME`` reads either) — plus a model card
(``README.md``) and a sample grid. A generator that lives in a local directory (``ae:DIR``, ``dir:DIR``, a synthesis
run's own) is copied into ``generator/`` and referenced as ``dir:generator``, so the
repository works anywhere; registry generators (``builtin:``, ``mimicry:``, ``hf:``) are
referenced by their spec.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Optional

from hatrefine.errors import HatrefineError
from hatrefine.files.jsonfiles import read_json
from hatrefine.files.names import (
    CONFIG,
    SAMPLES_GRID,
)
from hatrefine.files.quality import read_quality
from hatrefine.models.refiner import HatRefiner
from hatrefine.models.runs import load_run
from hatrefine.settings.config import SamplingSettings, settings_class


def _hat_line(s: dict) -> str:
    if s.get("hat") == "discriminator":
        return f"the discriminator of `{s.get('discriminator') or s['generator']}`, negated, trained from its weights"
    return f"{s.get('hat') or 'default for the image size'} (width {s.get('hat_width') or 'default'})"


def stage(run: str | Path, folder: str | Path, fid: Optional[dict] = None) -> Path:
    """Lay out the repository for ``run`` in ``folder``: the model's ``save_pretrained``, its sample grid and a model card."""
    run, folder = Path(run), Path(folder)
    model = load_run(run)
    discriminator = getattr(model.config, "discriminator", None)
    if discriminator and Path(discriminator).is_file():
        raise HatrefineError(
            f"the run's hat starts from a local discriminator file ({discriminator}); publish it with its generator as a repository (hf:) and fit with --discriminator hf:ORG/NAME"
        )
    if getattr(model.config, "checkpoint", None) and not model.config.generator.startswith(("ae:", "dir:")):
        raise HatrefineError(f"the run's generator weights are a local file ({model.config.checkpoint}); publish them as a generator repository (hf:) first")
    model.save_pretrained(folder)
    grids = sorted((run / "samples").glob("step_*.png"))
    grid = run / "before_after.png" if (run / "before_after.png").is_file() else (grids[-1] if grids else None)
    if grid is not None:
        shutil.copy2(grid, folder / SAMPLES_GRID)
    settings = read_json(folder / CONFIG)[model.settings_key]
    quality = read_quality(run) or None
    card = (
        model_card(settings, quality, fid, grid is not None, model.sampling)
        if isinstance(model, HatRefiner)
        else prior_card(settings, quality, fid, grid is not None)
    )
    (folder / "README.md").write_text(card)
    return folder


def prior_card(settings: dict, quality: Optional[dict], fid: Optional[dict], has_grid: bool) -> str:
    """The repository's README.md for a latent-prior model."""
    measured = [f"- {quality['line']}"] if quality and "line" in quality else []
    measured += [f"- FID {fid['fid']:.3f} ({fid.get('n_samples')} samples vs {fid.get('n_reference')} images of `{fid.get('data')}`)"] if fid else []
    card = [
        "---", "library_name: hatrefine", "tags: [energy-based-model, latent-ebm-prior, image-generation]", "---", "",
        "# Latent-space EBM prior", "",
        f"A latent EBM prior (Pang et al. 2020) fitted with hatrefine on the generator `{settings['generator']}`: p(z) ~ exp(f(z)) N(0, I),",
        f"sampled by {settings['prior_steps'] if settings['sample_steps'] is None else settings['sample_steps']} Langevin steps of {settings['prior_step_size']} on z, then x = G(z).", "",
        f"Fitted on `{settings['data']}`: {settings['steps']} updates, batch {settings['batch_size']}, Adam {settings['lr']}; posterior chains {settings['posterior_steps']} x {settings['posterior_step_size']}, sigma {settings['sigma']}.", "",
        "## Measured", "", *(measured or ["- nothing measured yet (run `hatrefine eval` and push again with `--fid`)"]),
        *(["", f"![samples]({SAMPLES_GRID})"] if has_grid else []), "",
        "## Use", "", "```bash", "pip install hatrefine", "hatrefine sample --run hf:ORG/NAME --n 64 --out samples.npz --png samples.png", "```", "",
    ]  # fmt: skip
    return "\n".join(card)


def model_card(settings: dict, quality: Optional[dict], fid: Optional[dict], has_grid: bool, sampling: Optional[SamplingSettings] = None) -> str:
    """The repository's README.md: what the model is, how it was fitted, what it samples with
    (``sampling``, default the settings' own), what was measured."""
    s = settings
    sampling = sampling or SamplingSettings.from_config(settings_class(settings).from_dict(settings))
    mode = "conditional (Langevin on Y, Z from the prior)" if s["mode"] == "conditional" else "joint (Langevin on Z and Y)"
    lines = [
        "---",
        "library_name: hatrefine",
        "tags: [energy-based-model, hat-ebm, image-generation]",
        "---",
        "",
        "# Hat EBM",
        "",
        f"A Hat EBM (Hill et al., NeurIPS 2022) fitted with hatrefine on top of the frozen generator `{s['generator']}`:",
        "energy U(Y, Z) = H(G(Z) + Y) / T, sampled by short-run Langevin dynamics.",
        "",
        "| setting | value |",
        "|---|---|",
        f"| generator | `{s['generator']}` |",
        f"| data | `{s['data']}` |",
        f"| mode | {mode} |",
        f"| hat network | {_hat_line(s)} |",
        f"| updates of H | {s['steps']} (batch {s['batch_size']}, Adam {s['lr']}, betas ({s.get('adam_beta1', 0.9)}, 0.999)) |",
        f"| Langevin steps K (train / sample) | {s['langevin_steps']} / {sampling.langevin_steps} |",
        f"| eps_y / eps_z, train (noise {s['noise']}) | {s['eps_y']} / {s['eps_z'] if s['mode'] == 'joint' else '-'} |",
        f"| eps_y / eps_z, sample (after any backoff) | {sampling.eps_y:g} / {f'{sampling.eps_z:g}' if s['mode'] == 'joint' else '-'} |",
        f"| temperature T (train / sample) | {s['temperature']} / {sampling.temperature:.4g} |",
        f"| sampling K and T chosen by | {sampling.chosen_by} |",
        "",
        "## Measured",
        "",
    ]
    if quality and "line" in quality:
        lines.append(f"- {quality['line']}")
    if fid:
        lines.append(
            f"- FID {fid['fid']:.3f} ({fid.get('n_samples')} samples vs {fid.get('n_reference')} images of `{fid.get('data')}`, Inception from {fid.get('inception')})"
        )
    if not quality and not fid:
        lines.append("- nothing measured yet (run `hatrefine eval` and push again with `--fid`)")
    if has_grid:
        lines += ["", f"![samples]({SAMPLES_GRID})"]
    lines += [
        "",
        "## Use",
        "",
        "```bash",
        "pip install hatrefine",
        "hatrefine sample --run hf:ORG/NAME --n 64 --out samples.npz --png samples.png",
        "```",
        "",
        "```python",
        "from hatrefine import HatRefiner",
        'refiner = HatRefiner.from_pretrained("hf:ORG/NAME")',
        "out = refiner.sample(64)",
        "```",
        "",
    ]
    return "\n".join(lines)


def push(run: str | Path, repo: str, private: bool = False, token: Optional[str] = None, fid: Optional[dict] = None, message: str = "Upload Hat EBM") -> str:
    """Create (or reuse) the Hub repository ``repo`` and upload the staged run; returns its URL."""
    import tempfile

    from huggingface_hub import HfApi
    from huggingface_hub.errors import HfHubHTTPError

    with tempfile.TemporaryDirectory() as tmp:
        folder = stage(run, tmp, fid)
        card = (folder / "README.md").read_text().replace("ORG/NAME", repo)
        (folder / "README.md").write_text(card)
        api = HfApi(token=token)
        try:
            url = api.create_repo(repo, private=private, exist_ok=True)
            api.upload_folder(repo_id=repo, folder_path=str(folder), commit_message=message)
        except HfHubHTTPError as e:
            raise HatrefineError(f"the Hub refused the upload to {repo} ({str(e).splitlines()[0]}); log in with `hf auth login` or pass --token") from None
        except Exception as e:  # the HTTP client's connection errors (its package varies between hub versions)
            first = (str(e).strip().splitlines() or [""])[0][:120]
            raise HatrefineError(
                f"could not reach the Hub to upload {repo} ({type(e).__name__}: {first}); check the connection (and that HF_HUB_OFFLINE is not set)"
            ) from None
    return str(url)
