"""Post-hoc GAN refiners that need only the generator G and its discriminator: the
discriminator's logit, calibrated or raw, read as an estimate of log p_data(x) / p_g(x).

Two select among the generator's own samples (the output is G(z) for some proposed z):

- ``DRS``, discriminator rejection sampling (Azadi et al. 2019): accept x ~ p_g with
  probability sigma(F(x)), F = l - l_M - log(1 - exp(l - l_M - eps)) - gamma, l_M the largest
  log ratio seen (a burn-in, then a running maximum). With gamma = 0 this is exact rejection
  sampling of p_g * exp(l) (acceptance exp(l - l_M)); the paper's gamma, a per-batch
  percentile of F (95th, as the MH-GAN authors' DRS baseline), raises the acceptance and gives
  up that exactness.
- ``MHGAN``, Metropolis-Hastings GAN (Turner et al. 2019): an independence sampler, K
  proposals per chain, each accepted with min(1, exp(l(x') - l(x_k))); its stationary law is
  p_g * exp(l). The authors start each chain at a real image (only its logit is used: it
  stands for a draw from the target, so no burn-in is needed) and, when a chain accepted
  nothing, replay the same proposals starting from the first one, so that a chain never
  outputs its real start.

Two move each latent (the output is G(z) for a moved z):

- ``DOT``, discriminator optimal transport in latent space (Tanaka 2019): K steps of SGD on
  ||z - z0 + delta|| - l(G(z)) / k_eff, k_eff the largest |l(G(z1)) - l(G(z2))| / ||z1 - z2||
  over 100 random pairs. For a N(0, I) latent the authors' code and Algorithm 2 correct the
  gradient to g - z (g . z) / sqrt(m), meant to keep z on its shell; with ||z||^2 close to m that
  reverses and multiplies the radial part by about sqrt(m) - 1 (it raises the objective), so the
  default here is the tangent projection g - z (g . z) / ||z||^2 (``correction="authors"`` for theirs).
- ``DGflow``, discriminator gradient flow (Ansari et al. 2021): z <- z + eta s(l) grad_z l(G(z))
  + sqrt(2 eta gamma) N(0, I), s = 1 for the KL divergence (sigma(-l) for logD, sigma(l) for
  JS); the authors' update has no prior term and uses the raw logit, 25 steps of eta 0.1 with
  gamma 0.01. Its long-run law is exp(l / gamma) on the latent, not the target: it is a
  short-run refiner.

DDLS (``hatrefine.sampling.ddls``) is the Langevin member of the family; ``baseline(method, ...)``
builds any of the five. Every refiner here returns a ``RatioSamples`` with the images, their
latents and its own counts.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Optional

import torch
from torch import nn

from hatrefine.errors import HatrefineError
from hatrefine.networks.generator import Generator
from hatrefine.sampling.density_ratio import LogRatio
from hatrefine.sampling.langevin import frozen

DIVERGENCES = ("kl", "logd", "js")
DOT_CORRECTIONS = ("tangent", "authors", "none")  # of DOT's gradient for a N(0, I) latent


@dataclass
class RatioSamples:
    """Refined images ``x`` = G(``z``) and what it took: ``proposals`` (generator samples drawn,
    burn-in included), ``ratio_evaluations`` and per-method counts in ``stats``."""

    x: torch.Tensor
    z: torch.Tensor
    stats: dict = field(default_factory=dict)


@torch.no_grad()
def _draw(generator: Generator, ratio: LogRatio, n: int, rng: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    z = generator.sample_latent(n, generator=rng)
    return z, ratio(generator(z))


class DRS:
    """Discriminator rejection sampling (see the module docstring).

    Args:
        burn_in: generator samples whose largest log ratio starts l_M (the paper: about 10,000).
        gamma_percentile: gamma is this percentile of F over each batch of proposals (95, the
            MH-GAN authors' DRS baseline); None: gamma = 0, exact rejection sampling.
        eps: keeps log(1 - exp(l - l_M - eps)) finite for the sample that sets the maximum.
    """

    def __init__(self, generator: Generator, ratio: LogRatio, burn_in: int = 10000, gamma_percentile: Optional[float] = 95.0, eps: float = 1e-6):
        generator.require_prior()
        if gamma_percentile is not None and not 0 <= gamma_percentile <= 100:
            raise HatrefineError(f"the DRS gamma percentile must be in [0, 100], got {gamma_percentile}")
        self.generator, self.ratio, self.burn_in, self.gamma_percentile, self.eps = generator, ratio, burn_in, gamma_percentile, eps

    def sample(self, n: int, seed: int = 0, batch_size: int = 256, max_proposals: Optional[int] = None) -> RatioSamples:
        """``n`` accepted samples; ``max_proposals`` (default 1000 n) bounds the work."""
        G, device = self.generator, self.generator.device
        rng = torch.Generator(device).manual_seed(seed)
        u_rng = torch.Generator().manual_seed(seed + 1)
        budget = max_proposals or 1000 * n
        with frozen(self.ratio):
            log_max = max(
                (_draw(G, self.ratio, min(batch_size, self.burn_in - s), rng)[1].max().item() for s in range(0, self.burn_in, batch_size)), default=-math.inf
            )
            zs, proposals = [], 0
            while sum(len(z) for z in zs) < n:
                if proposals >= budget:
                    raise HatrefineError(
                        f"DRS accepted {sum(len(z) for z in zs)} of {n} samples in {proposals} proposals; raise --max-proposals or lower the gamma percentile"
                    )
                z, log_ratio = _draw(G, self.ratio, batch_size, rng)
                proposals += len(z)
                running = torch.cummax(log_ratio, 0).values.clamp(min=log_max)  # each proposal against the maximum seen so far
                log_max = running[-1].item()
                delta = (log_ratio - running).double()
                f = delta - torch.log(-torch.expm1(delta - self.eps))
                gamma = torch.quantile(f, self.gamma_percentile / 100).item() if self.gamma_percentile is not None else 0.0
                accept = torch.rand(len(z), generator=u_rng, dtype=torch.float64).to(device) < torch.sigmoid(f - gamma)
                zs.append(z[accept])
            z = torch.cat(zs)[:n]
            x = torch.cat([G(part) for part in z.split(batch_size)]).detach()
        accepted = sum(len(part) for part in zs)
        return RatioSamples(
            x,
            z,
            {
                "proposals": proposals + self.burn_in,
                "accepted": accepted,
                "acceptance_rate": accepted / proposals,
                "proposals_per_sample": (proposals + self.burn_in) / n,
            },
        )


class MHGAN:
    """The MH-GAN independence sampler (see the module docstring).

    Args:
        n_proposals: K, generator samples proposed per chain (the authors: 640).
        real: images whose logits start the chains (the authors' choice: a chain starts at a real
            image's log ratio and never outputs it); None: each chain starts at its first proposal.
    """

    def __init__(self, generator: Generator, ratio: LogRatio, n_proposals: int = 640, real: Optional[torch.Tensor] = None):
        generator.require_prior()
        if n_proposals < 1:
            raise HatrefineError(f"MH-GAN needs at least one proposal per chain, got {n_proposals}")
        self.generator, self.ratio, self.n_proposals, self.real = generator, ratio, n_proposals, real

    @torch.no_grad()
    def sample(self, n: int, seed: int = 0, batch_size: int = 256) -> RatioSamples:
        G, device, K = self.generator, self.generator.device, self.n_proposals
        rng, u_rng = torch.Generator(device).manual_seed(seed), torch.Generator().manual_seed(seed + 1)
        zs, restarted = [], 0
        with frozen(self.ratio):
            for s in range(0, n, batch_size):
                b = min(batch_size, n - s)
                drawn = [_draw(G, self.ratio, b, rng) for _ in range(K)]
                z_all, log_ratio = torch.stack([d[0] for d in drawn]), torch.stack([d[1] for d in drawn])  # (K, b, ...), (K, b)
                log_u = torch.rand(K, b, generator=u_rng).log().to(device)
                if self.real is not None:
                    start = torch.randint(len(self.real), (b,), generator=u_rng)
                    current, index = self.ratio(self.real[start].to(device, G.dtype)), torch.full((b,), -1, device=device)
                    current, index = self._chain(log_ratio, log_u, current, index, first=0)
                    stuck = index < 0  # accepted nothing: replay the same proposals from the first one, as the authors
                    restarted += int(stuck.sum())
                    if stuck.any():
                        _, again = self._chain(
                            log_ratio[:, stuck], log_u[:, stuck], log_ratio[0, stuck], torch.zeros(int(stuck.sum()), dtype=torch.long, device=device), first=1
                        )
                        index[stuck] = again
                else:
                    _, index = self._chain(log_ratio, log_u, log_ratio[0], torch.zeros(b, dtype=torch.long, device=device), first=1)
                zs.append(z_all[index, torch.arange(b, device=device)])
            z = torch.cat(zs)
            x = torch.cat([G(part) for part in z.split(batch_size)])
        return RatioSamples(x, z, {"proposals": n * K, "proposals_per_sample": K, "chains_replayed": restarted})

    @staticmethod
    def _chain(log_ratio: torch.Tensor, log_u: torch.Tensor, current: torch.Tensor, index: torch.Tensor, first: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Run the chains over proposals ``first``..K-1: accept k when log u_k <= l_k - l(current)."""
        current, index = current.clone(), index.clone()
        for k in range(first, len(log_ratio)):
            accept = log_u[k] <= log_ratio[k] - current
            current = torch.where(accept, log_ratio[k], current)
            index = torch.where(accept, torch.full_like(index, k), index)
        return current, index


class _LatentMove:
    """What DOT and DGflow share: batches of latents moved by gradients of l(G(z))."""

    def __init__(self, generator: Generator, ratio: LogRatio, n_steps: int):
        generator.require_prior()
        if n_steps < 0:
            raise HatrefineError(f"the number of steps must be >= 0, got {n_steps}")
        self.generator, self.ratio, self.n_steps = generator, ratio, n_steps

    def _log_ratio_and_grad(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        z = z.detach().requires_grad_(True)
        log_ratio = self.ratio(self.generator(z))
        (grad,) = torch.autograd.grad(log_ratio.sum(), z)
        return log_ratio.detach(), grad

    def sample(self, n: int, seed: int = 0, batch_size: int = 256) -> RatioSamples:
        G = self.generator
        rng = torch.Generator(G.device).manual_seed(seed)
        z0 = G.sample_latent(n, generator=rng)
        with frozen(self.ratio), frozen(G.module):
            z = torch.cat([self.move(part, rng) for part in z0.split(batch_size)])
            with torch.no_grad():
                x = torch.cat([G(part) for part in z.split(batch_size)])
        moved = (z - z0).flatten(1).norm(dim=1)
        return RatioSamples(
            x, z, {"proposals": n, "proposals_per_sample": 1, "ratio_gradients_per_sample": self.n_steps, "mean_latent_move": moved.mean().item()}
        )

    def move(self, z0: torch.Tensor, rng: torch.Generator) -> torch.Tensor:
        raise NotImplementedError


class DOT(_LatentMove):
    """Latent-space discriminator optimal transport (see the module docstring).

    Args:
        n_steps: SGD steps (the authors' code: 10 in its example, up to 100).
        lr: the SGD step size (the authors': 0.01).
        k_eff: the Lipschitz estimate; None: estimated from ``k_pairs`` random pairs (``estimate_k_eff``).
        delta: added to every coordinate of z - z0, so the norm has a gradient at the start.
        correction: of the gradient for a N(0, I) latent: tangent (to the sphere through z), authors
            (their g - z (g . z) / sqrt(m)) or none.
    """

    def __init__(
        self,
        generator: Generator,
        ratio: LogRatio,
        n_steps: int = 10,
        lr: float = 0.01,
        k_eff: Optional[float] = None,
        k_pairs: int = 100,
        delta: float = 1e-3,
        correction: str = "tangent",
        seed: int = 0,
    ):
        super().__init__(generator, ratio, n_steps)
        if lr <= 0:
            raise HatrefineError(f"the DOT step size must be positive, got {lr}")
        if correction not in DOT_CORRECTIONS:
            raise HatrefineError(f"unknown DOT correction {correction!r}; use {', '.join(DOT_CORRECTIONS)}")
        self.lr, self.delta, self.correction = lr, delta, correction
        self.k_eff = k_eff if k_eff is not None else self.estimate_k_eff(k_pairs, seed)

    @torch.no_grad()
    def estimate_k_eff(self, pairs: int = 100, seed: int = 0) -> float:
        """max |l(G(z1)) - l(G(z2))| / ||z1 - z2|| over ``pairs`` independent pairs of latents."""
        rng = torch.Generator(self.generator.device).manual_seed(seed + 7)
        with frozen(self.ratio):
            (z1, l1), (z2, l2) = (_draw(self.generator, self.ratio, pairs, rng) for _ in range(2))
        return ((l1 - l2).abs() / (z1 - z2).flatten(1).norm(dim=1)).max().item()

    def objective(self, z: torch.Tensor, z0: torch.Tensor) -> torch.Tensor:
        """||z - z0 + delta|| - l(G(z)) / k_eff for each latent (what DOT lowers)."""
        return (z - z0 + self.delta).flatten(1).norm(dim=1) - self.ratio(self.generator(z)) / self.k_eff

    def move(self, z0: torch.Tensor, rng: torch.Generator) -> torch.Tensor:
        z, m = z0.clone(), z0[0].numel()
        for _ in range(self.n_steps):
            z = z.detach().requires_grad_(True)
            (g,) = torch.autograd.grad(self.objective(z, z0).sum(), z)
            flat, zf = g.flatten(1), z.detach().flatten(1)
            if self.correction != "none":
                norm = math.sqrt(m) if self.correction == "authors" else zf.square().sum(1, keepdim=True)
                flat = flat - zf * (flat * zf).sum(1, keepdim=True) / norm
            z = z.detach() - self.lr * flat.view_as(g)
        return z.detach()


class DGflow(_LatentMove):
    """Discriminator gradient flow in latent space (see the module docstring).

    Args:
        n_steps: Euler-Maruyama steps (the authors: 25).
        eta: step size (0.1).
        gamma: the entropy regulariser: the noise is sqrt(2 eta gamma) N(0, I) (0.01).
        divergence: kl, logd or js (the authors' default: kl).
    """

    def __init__(self, generator: Generator, ratio: LogRatio, n_steps: int = 25, eta: float = 0.1, gamma: float = 0.01, divergence: str = "kl"):
        super().__init__(generator, ratio, n_steps)
        if divergence not in DIVERGENCES:
            raise HatrefineError(f"unknown DGflow divergence {divergence!r}; use {', '.join(DIVERGENCES)}")
        if eta <= 0 or gamma < 0:
            raise HatrefineError(f"DGflow needs eta > 0 and gamma >= 0, got {eta} and {gamma}")
        self.eta, self.gamma, self.divergence = eta, gamma, divergence

    def move(self, z0: torch.Tensor, rng: torch.Generator) -> torch.Tensor:
        z = z0.clone()
        for _ in range(self.n_steps):
            log_ratio, grad = self._log_ratio_and_grad(z)
            weight = {"kl": torch.ones_like(log_ratio), "logd": torch.sigmoid(-log_ratio), "js": torch.sigmoid(log_ratio)}[self.divergence]
            noise = torch.randn(z.shape, generator=rng, device=z.device, dtype=z.dtype)
            z = z + self.eta * weight.view(-1, *[1] * (z.dim() - 1)) * grad + math.sqrt(2 * self.eta * self.gamma) * noise
        return z.detach()


def check_discriminator(generator: Generator, discriminator: nn.Module) -> None:
    """A one-line error unless ``discriminator`` takes the generator's images and returns one logit per image."""
    with torch.no_grad(), frozen(discriminator):
        x = generator(generator.sample_latent(2))
        try:
            out = discriminator(x)
        except RuntimeError as e:
            shape = "x".join(map(str, generator.image_shape))
            raise HatrefineError(
                f"the discriminator fails on {generator.name}'s {shape} images ({str(e).splitlines()[0][:120]}); pass the discriminator of this GAN"
            ) from None
    if out.numel() != 2:
        raise HatrefineError(f"the discriminator returns {tuple(out.shape)} for 2 images, not one logit each; pass a discriminator with a single output")


METHODS = ("ddls", "drs", "mh", "dot", "dgflow")


def baseline(method: str, generator: Generator, discriminator: nn.Module, calibration=None, real: Optional[torch.Tensor] = None, **options):
    """The refiner ``method`` (ddls, drs, mh, dot, dgflow) on ``generator`` and ``discriminator``: an
    object whose ``sample(n, seed, batch_size)`` returns images ``.x`` and latents ``.z``.

    ``calibration``: a logistic head on the logit (``density_ratio.calibrate``); ``real``: images
    that start MH-GAN's chains; ``options``: the method's own arguments (``DDLS``, ``DRS``, ...)."""
    from hatrefine.sampling.ddls import DDLS

    if method not in METHODS:
        raise HatrefineError(f"unknown baseline method {method!r}; use {', '.join(METHODS)}")
    check_discriminator(generator, discriminator)
    if method == "ddls":
        return DDLS(generator, discriminator, calibration=calibration, **options)
    ratio = LogRatio(discriminator, calibration).to(generator.device)
    if method == "mh":
        return MHGAN(generator, ratio, real=real, **options)
    return {"drs": DRS, "dot": DOT, "dgflow": DGflow}[method](generator, ratio, **options)
