"""Langevin samplers over (Y, Z), as objects with schedules.

One public update rule, ``langevin_step``, for every variable of every sampler:
v <- v - (eps^2 / 2) * grad_v U + noise * eps * N(0, I).

``LangevinSampler`` moves Z and Y (joint mode: ``simultaneous``, both from one energy gradient
at the current (Y, Z), or ``alternate``, Z then Y at the new Z as in paper eq. 6-7) or Y alone
with Z held (``eps_z`` None: conditional mode, eq. 9, and pixel-only refinement); the DDLS
baseline is a ``LangevinSampler`` on Z alone with the energy ||z||^2 / 2 - d(G(z)) / T.
``LatentLangevin`` runs the same rule on a latent energy alone (the latent-space EBM prior's
prior and posterior chains): it never calls G unless the energy does. The temperature lives in
the energy (``HatEnergy``), nowhere else.

Cost per step, by construction: network parameters never get gradients, no autograd graph
outlives the step that made it (memory is flat in the number of steps), and G runs once
per step in joint mode and once per chain in conditional mode. H runs twice per joint step
when alternating, once when simultaneous.
"""

from __future__ import annotations

import contextlib
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterator, Optional

import torch
from torch import nn

from hatrefine.distributed import Shard
from hatrefine.errors import HatrefineError
from hatrefine.sampling.energy import HatEnergy
from hatrefine.settings.config import JOINT_UPDATES, Schedule


@dataclass
class LangevinResult:
    """End state of a batch of chains: ``x = g + y`` with ``g = G(z)``.

    ``energies``: mean U per step (when recorded); ``path``: dict of ``x``, ``g``, ``y`` frames,
    each (frames, n, C, H, W), for the first few chains (when requested); ``drift``: for each
    variable that moved, the mean over steps and chains of ||drift|| / ||noise|| (how far the
    chain is from a random walk: far above 1, it is gradient descent), when recorded.
    """

    x: torch.Tensor
    y: torch.Tensor
    z: torch.Tensor
    g: torch.Tensor
    energies: Optional[torch.Tensor] = None
    path: Optional[dict[str, torch.Tensor]] = None
    drift: Optional[dict[str, float]] = None

    @classmethod
    def cat(cls, parts: list["LangevinResult"]) -> "LangevinResult":
        """Join the end states of chunks of chains (energies and paths are per chunk: dropped)."""
        return cls(*(torch.cat([getattr(p, k) for p in parts]) for k in ("x", "y", "z", "g")))


@contextmanager
def frozen(module: nn.Module) -> Iterator[None]:
    """Parameters need no gradient and layers run in inference mode; both restored after."""
    flags = [p.requires_grad for p in module.parameters()]
    training = module.training
    module.requires_grad_(False)
    module.eval()
    try:
        yield
    finally:
        for p, f in zip(module.parameters(), flags):
            p.requires_grad_(f)
        module.train(training)


def gaussian_noise(like: torch.Tensor, generator: Optional[torch.Generator] = None, shard: Shard = Shard()) -> torch.Tensor:
    """N(0, I) shaped like ``like``: drawn for the whole batch of all shards, this shard's part kept
    (so a chain's noise does not depend on the number of processes)."""
    full = torch.randn((like.shape[0] * shard.world, *like.shape[1:]), generator=generator, device=like.device, dtype=like.dtype)
    return full[shard.slice(len(full))]


def langevin_step(
    v: torch.Tensor,
    grad: torch.Tensor,
    eps: float,
    noise: float = 1.0,
    generator: Optional[torch.Generator] = None,
    shard: Shard = Shard(),
    mask: Optional[torch.Tensor] = None,
    clip: Optional[float] = None,
    drift: Optional[list] = None,
) -> torch.Tensor:
    """One Langevin update, the rule every sampler here uses: ``v - (eps^2 / 2) grad + noise * eps * N(0, I)``.

    ``grad``: the energy's gradient at ``v`` (the temperature is inside the energy). ``mask``: 1 where
    ``v`` moves, 0 where it is held. ``clip``: per-sample bound on the norm of the gradient step.
    ``drift``: a list that receives the mean ||step|| / ||noise|| over the chains. Returns a
    detached tensor."""
    step, xi = 0.5 * eps**2 * grad, noise * eps * gaussian_noise(v, generator, shard)
    if clip is not None:
        norm = step.flatten(1).norm(dim=1).clamp_min(1e-12)
        step = step * (clip / norm).clamp(max=1.0).view(-1, *[1] * (step.dim() - 1))
    if mask is not None:
        step, xi = step * mask, xi * mask
    if drift is not None:
        drift.append((step.flatten(1).norm(dim=1) / xi.flatten(1).norm(dim=1).clamp_min(1e-30)).mean())
    return (v.detach() - step + xi).detach()


class LangevinSampler:
    """Langevin dynamics on a ``HatEnergy`` over Z (if ``eps_z``) and Y (if ``eps_y``).

    Args:
        energy: the energy U(Y, Z).
        n_steps: K, the number of Langevin steps.
        eps_y, eps_z: step sizes; ``None`` or 0 leaves that variable fixed.
        noise: scale of the injected noise (1 = exact Langevin).
        y_clip: per-sample bound on the norm of the Y gradient step ``(eps_y^2 / 2) * grad``.
        step_schedule, noise_schedule: factors on the step sizes and on the noise along the chain.
        amp: evaluate the energy under bf16 autocast.
        joint_update: when both Z and Y move, ``simultaneous`` (both from one gradient of U at the
            current (Y, Z): Langevin on the pair, one pass of H per step; a fit's default too) or
            ``alternate`` (Z, then Y at the new Z: paper eq. 6-7, two passes of H per step).
        init_scale_res: chains started by ``chains`` begin at Y = init_scale_res * N(0, I)
            instead of 0 (the authors' test-time ``init_scale_res``, 0.01 for synthesis and retrofit).
    """

    def __init__(
        self,
        energy: HatEnergy,
        n_steps: int,
        eps_y: Optional[float] = None,
        eps_z: Optional[float] = None,
        noise: float = 1.0,
        y_clip: Optional[float] = 2.5,
        step_schedule: Schedule = Schedule(),
        noise_schedule: Schedule = Schedule(),
        amp: bool = False,
        joint_update: str = "simultaneous",
        init_scale_res: float = 0.0,
    ):
        if n_steps < 0:
            raise HatrefineError(f"number of Langevin steps must be >= 0, got {n_steps}")
        for name, eps in (("eps_y", eps_y), ("eps_z", eps_z)):
            if eps is not None and eps < 0:
                raise HatrefineError(f"{name} must be >= 0, got {eps}")
        if noise < 0 or init_scale_res < 0:
            raise HatrefineError(f"the noise scale and init_scale_res must be >= 0, got {noise} and {init_scale_res}")
        if joint_update not in JOINT_UPDATES:
            raise HatrefineError(f"unknown joint update {joint_update!r}; use {' or '.join(JOINT_UPDATES)}")
        self.energy, self.n_steps = energy, n_steps
        self.eps_y, self.eps_z, self.noise, self.y_clip = eps_y or 0.0, eps_z or 0.0, noise, y_clip
        self.step_schedule, self.noise_schedule, self.amp = step_schedule, noise_schedule, amp
        self.joint_update, self.init_scale_res = joint_update, init_scale_res

    def _energy(self, y: torch.Tensor, g: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        with torch.autocast(y.device.type, dtype=torch.bfloat16, enabled=self.amp):
            return self.energy(y, g, z).float()

    def _move_z(self, z: torch.Tensor, grad: torch.Tensor, s: float, n: float, generator, shard: Shard, drift: Optional[list]) -> torch.Tensor:
        step = langevin_step(z, grad, self.eps_z * s, n, generator, shard, mask=self.energy.generator.latent_mask, drift=drift)
        return step.requires_grad_(True)

    def _move_y(self, y: torch.Tensor, grad: torch.Tensor, s: float, n: float, generator, shard: Shard, drift: Optional[list]) -> torch.Tensor:
        return langevin_step(y, grad, self.eps_y * s, n, generator, shard, clip=self.y_clip, drift=drift)

    def sample(
        self,
        z: torch.Tensor,
        y: Optional[torch.Tensor] = None,
        generator: Optional[torch.Generator] = None,
        record_energy: bool = False,
        path_frames: int = 0,
        path_chains: int = 8,
        shard: Shard = Shard(),
        record_drift: bool = False,
    ) -> LangevinResult:
        """Run K steps from latents ``z`` and residuals ``y`` (default 0).

        ``path_frames`` > 0 keeps that many evenly spaced frames (first and last included)
        of the first ``path_chains`` chains. ``shard``: these chains are one process's part
        of a batch ``shard.world`` times larger (the noise is drawn as for the whole batch).
        ``record_drift`` fills ``LangevinResult.drift``.
        """
        G = self.energy.generator
        G.check_latent(z)
        K = self.n_steps
        update_z, update_y = self.eps_z > 0, self.eps_y > 0
        frames = sorted({round(i * K / max(1, path_frames - 1)) for i in range(path_frames)}) if path_frames else []
        path: dict[str, list[torch.Tensor]] = {"x": [], "g": [], "y": []}
        energies = []
        drift: dict[str, Optional[list]] = {"z": [] if record_drift and update_z else None, "y": [] if record_drift and update_y else None}

        with frozen(self.energy):
            z = z.detach().clone().requires_grad_(update_z)
            with torch.set_grad_enabled(update_z):
                g = G(z)  # joint mode keeps this graph until the next Z update; conditional: once per chain
            y = torch.zeros_like(g) if y is None else y.detach().clone()
            G.check_image(y, what="residual y")

            for k in range(K + 1):
                if k in frames:
                    for key, v in (("x", g + y), ("g", g), ("y", y)):
                        path[key].append(v[:path_chains].detach().cpu())
                if k == K:
                    break
                s, n = self.step_schedule(k, K), self.noise_schedule(k, K) * self.noise
                if update_z and update_y and self.joint_update == "simultaneous":
                    u = self._energy(y.requires_grad_(True), g, z)
                    grad_z, grad_y = torch.autograd.grad(u.sum(), (z, y))
                    z = self._move_z(z, grad_z, s, n, generator, shard, drift["z"])
                    y = self._move_y(y, grad_y, s, n, generator, shard, drift["y"])
                    g = G(z)
                else:
                    if update_z:
                        u = self._energy(y, g, z)
                        (grad,) = torch.autograd.grad(u.sum(), z)
                        z = self._move_z(z, grad, s, n, generator, shard, drift["z"])
                        g = G(z)
                    if update_y:
                        y.requires_grad_(True)
                        u = self._energy(y, g.detach(), z.detach())
                        (grad,) = torch.autograd.grad(u.sum(), y)
                        y = self._move_y(y, grad, s, n, generator, shard, drift["y"])
                if record_energy and (update_y or update_z):
                    energies.append(u.detach().mean())

        g = g.detach()
        return LangevinResult(
            x=g + y,
            y=y,
            z=z.detach(),
            g=g,
            energies=torch.stack(energies).cpu() if energies else None,
            path={k: torch.stack(v) for k, v in path.items()} if frames else None,
            drift={k: torch.stack(v).mean().item() for k, v in drift.items() if v} if record_drift else None,
        )

    def chains(self, n: int, seed: int = 0, batch_size: int = 256, shard: Shard = Shard()) -> Iterator[LangevinResult]:
        """``n`` chains from z ~ p0, run and returned in chunks of ``batch_size`` (``seeded_latents``)."""
        G = self.energy.generator
        for z, rng in seeded_latents(G, n, seed, batch_size, shard):
            y = self.init_scale_res * torch.randn((len(z), *G.image_shape), generator=rng, device=G.device) if self.init_scale_res else None
            yield self.sample(z, y, generator=rng)


def seeded_latents(G, n: int, seed: int, batch_size: int, shard: Shard = Shard()) -> Iterator[tuple[torch.Tensor, torch.Generator]]:
    """Chunks of ``n`` latents from G's prior with their generator: chunk ``i`` is seeded by
    (seed, i), so results do not depend on the number of processes. With ``shard``, only
    chunks ``i = rank, rank + world, ...``."""
    if n <= 0 or batch_size <= 0:
        raise HatrefineError(f"--n and --batch-size must be positive, got {n} and {batch_size}")
    for i, start in enumerate(range(0, n, batch_size)):
        if i % shard.world == shard.rank:
            rng = torch.Generator(G.device).manual_seed(seed * 1_000_003 + i)
            yield G.sample_latent(min(batch_size, n - start), generator=rng), rng


class LatentLangevin:
    """Langevin on latents under an energy ``E(z)`` (one value per chain), with the update rule
    (``langevin_step``), schedules, sharded noise and frozen networks of ``LangevinSampler``.

    Args:
        n_steps: number of steps; ``step_size``: s in z <- z - (s^2 / 2) grad E + noise * s * N(0, I).
        modules: the networks ``E`` runs (kept frozen while sampling).
        mask: 1 on the latent entries that move, 0 on held ones (``Generator.latent_mask``).
    """

    def __init__(
        self,
        n_steps: int,
        step_size: float,
        noise: float = 1.0,
        step_schedule: Schedule = Schedule(),
        modules: tuple[nn.Module, ...] = (),
        mask: Optional[torch.Tensor] = None,
    ):
        if n_steps < 0 or step_size < 0 or noise < 0:
            raise HatrefineError(f"Langevin steps, step size and noise must be >= 0, got {n_steps}, {step_size} and {noise}")
        self.n_steps, self.step_size, self.noise, self.step_schedule, self.modules = n_steps, step_size, noise, step_schedule, modules
        self.mask = mask

    def sample(
        self, z: torch.Tensor, energy, generator: Optional[torch.Generator] = None, shard: Shard = Shard(), frames: tuple[int, ...] = ()
    ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Run the chains from ``z``; returns the end latents and the latents at steps ``frames``."""
        K, kept = self.n_steps, []
        z = z.detach().clone()
        with contextlib.ExitStack() as stack:
            for m in self.modules:
                stack.enter_context(frozen(m))
            for k in range(K + 1):
                if k in frames:
                    kept.append(z)
                if k == K:
                    break
                eps = self.step_size * self.step_schedule(k, K)
                with torch.enable_grad():
                    z.requires_grad_(True)
                    (grad,) = torch.autograd.grad(energy(z).sum(), z)
                z = langevin_step(z, grad, eps, self.noise, generator, shard, mask=self.mask)
        return z, kept
