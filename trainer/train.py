"""The InfinityGAN training loop (official-training-apps.md 1.7-1.9).

One iteration: D step (logistic + coordinate L1 on real and fake), lazy R1 every
`d_reg_every`, G step (non-saturating + coordinate L1 + L1 diversity), lazy path length
every `g_reg_every`, EMA update. Adam with the lazy-regularisation corrections of lr and
betas. Single process, or DDP under torchrun (nccl on GPUs, gloo on CPU); autocast with
bf16 (GPU or CPU) or fp16 (GPU, GradScaler); the regularisation steps run in fp32.
"""
from __future__ import annotations

import contextlib
import copy
import dataclasses
import gc
import json
import math
import os
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from igan.engine import checkpoint
from igan.engine.config import GeneratorConfig
from igan.engine.errors import CheckpointError, RequestError
from igan.engine.model import Generator

from . import losses
from .data import PatchDataset
from .discriminator import Discriminator
from .generator import TrainingGenerator
from .latents import latent_size, sample_fakes
from .plots import save_curves, save_grid
from .state import STATE_NAME, load_state, save_state


# The lazy regularisers' losses: logged on every step that computes them (every d_reg_every /
# g_reg_every steps), whatever log_every says.
REGULARISERS = ("r1", "path", "path_length")


@dataclass(frozen=True)
class TrainOptions:
    steps: int = 1000
    batch: int = 8  # per process; even (dual pairs)
    lr: float = 0.002
    r1_gamma: float = 10.0
    path_weight: float = 2.0
    d_reg_every: int = 16
    g_reg_every: int = 4
    mixing: float = 0.9
    diversity_weight: float = 1.0
    coord_weight: float = 1.0
    ema_kimg: float = 10.0  # EMA half-life in thousands of images (official 10)
    ema_rampup: float | None = None  # half-life <= rampup * images seen (StyleGAN2-ADA), None: off
    d_width: int = 32
    full_size: int | None = None  # None: patch + 6 * upscale (197 for 101-px patches)
    keep_aspect: bool = False  # wide images keep their width (data.PatchDataset); official: centre square
    save_every: int = 500
    sample_every: int = 250
    log_every: int = 10
    seed: int = 0
    precision: str = "fp32"
    keep_checkpoints: int = 3

    def __post_init__(self):
        """The options on their own (RequestError naming the flag): igan-train's parser checks
        them as they are typed; this catches the same mistakes from Python."""
        if self.batch < 2 or self.batch % 2:
            raise RequestError(f"--batch must be even and >= 2 (dual pairs), got {self.batch}")
        if self.steps < 1:
            raise RequestError(f"--steps must be >= 1, got {self.steps}")
        if self.precision not in ("fp32", "bf16", "fp16"):
            raise RequestError(f"--precision must be fp32, bf16 or fp16, got {self.precision!r}")
        for flag, value, low, strict in (("--lr", self.lr, 0, True), ("--r1", self.r1_gamma, 0, False),
                                         ("--path-weight", self.path_weight, 0, False),
                                         ("--diversity-weight", self.diversity_weight, 0, False),
                                         ("--coord-weight", self.coord_weight, 0, False),
                                         ("--ema-kimg", self.ema_kimg, 0, False),
                                         ("--ema-rampup", self.ema_rampup, 0, True)):
            if value is None and flag == "--ema-rampup":
                continue
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
                    or value < low or (strict and value == low):
                what = "a finite positive number" if strict else "a finite number >= 0"
                raise RequestError(f"{flag} must be {what}, got {value!r}")
        if isinstance(self.mixing, bool) or not isinstance(self.mixing, (int, float)) or not 0 <= self.mixing <= 1:
            raise RequestError(f"--mixing must be a probability in [0, 1], got {self.mixing!r}")
        for flag, value in (("--d-width", self.d_width), ("--save-every", self.save_every),
                            ("--sample-every", self.sample_every), ("--log-every", self.log_every),
                            ("--full-size", self.full_size)):
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                raise RequestError(f"{flag} must be a positive integer, got {value!r}")


def default_full_size(cfg: GeneratorConfig) -> int:
    return cfg.patch_size + 6 * cfg.upscale


def lazy_adam(params, lr: float, reg_every: int) -> torch.optim.Adam:
    """Adam(beta1=0, beta2=0.99) with lr and betas rescaled for a regulariser every `reg_every`."""
    ratio = reg_every / (reg_every + 1)
    return torch.optim.Adam(params, lr=lr * ratio, betas=(0.0 ** ratio, 0.99 ** ratio))


def unwrap(m: nn.Module) -> nn.Module:
    return m.module if isinstance(m, nn.parallel.DistributedDataParallel) else m


@torch.no_grad()
def ema_update(ema: nn.Module, model: nn.Module, decay: float) -> None:
    """p_ema <- decay p_ema + (1 - decay) p on parameters (buffers are not averaged)."""
    for pe, p in zip(ema.parameters(), model.parameters()):
        pe.lerp_(p.detach(), 1.0 - decay)


def ema_decay(opts: TrainOptions, images_seen: int, batch_total: int) -> float:
    half = opts.ema_kimg * 1000
    if opts.ema_rampup is not None:
        half = min(half, images_seen * opts.ema_rampup)
    return 0.5 ** (batch_total / max(half, 1e-8))


def _dist():
    """(rank, world, local_rank) under torchrun, else None."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return None
    return int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"]), int(os.environ.get("LOCAL_RANK", "0"))


class Trainer:
    """Owns models, optimisers, data and RNG; `run()` trains to `opts.steps`."""

    def __init__(self, cfg: GeneratorConfig, data_dir: str | os.PathLike, out_dir: str | os.PathLike,
                 opts: TrainOptions, device: str = "auto", resume: bool = False, progress: bool = True):
        self.cfg, self.opts, self.progress = cfg, opts, progress
        self.out = Path(out_dir)
        self.dist = _dist()
        self.rank, self.world = (self.dist[0], self.dist[1]) if self.dist else (0, 1)
        self.device = self._device(device)
        self._own_group = bool(self.dist) and not torch.distributed.is_initialized()
        if self._own_group:
            backend = "nccl" if self.device.type == "cuda" else "gloo"
            torch.distributed.init_process_group(backend, device_id=self.device if backend == "nccl" else None)
        full = opts.full_size or default_full_size(cfg)
        self.data = PatchDataset(data_dir, full, cfg.patch_size, opts.keep_aspect)
        torch.manual_seed(opts.seed)  # the initial weights: the same on every rank
        self.gen = torch.Generator().manual_seed(opts.seed * 1000 + self.rank)  # data and latents (CPU)
        self.noise_gen = torch.Generator(self.device).manual_seed(opts.seed * 1000 + self.rank + 1)  # noise maps
        self.g = Generator(cfg).to(self.device)
        self.d = Discriminator(cfg.patch_size, opts.d_width).to(self.device)
        self.g_ema = copy.deepcopy(self.g).eval().requires_grad_(False)
        self.g_train = TrainingGenerator(self.g)
        self.g_opt = lazy_adam(self.g.parameters(), opts.lr, opts.g_reg_every)
        self.d_opt = lazy_adam(self.d.parameters(), opts.lr, opts.d_reg_every)
        self.step = 0
        self.mean_path = torch.zeros((), device=self.device)
        self.history: dict[str, list[tuple[int, float]]] = {}
        amp_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(opts.precision)
        if opts.precision == "fp16" and self.device.type != "cuda":
            # bf16 autocast also runs on CPU (slowly; it is how CI exercises the mixed path)
            raise RequestError(f"--precision fp16 (with its gradient scaler) is for GPUs; use fp32 or bf16 on "
                               f"{self.device}")
        self.amp_dtype = amp_dtype
        scale = opts.precision == "fp16"
        self.g_scaler = torch.amp.GradScaler("cuda", enabled=scale)
        self.d_scaler = torch.amp.GradScaler("cuda", enabled=scale)
        if resume:
            self.load(self.out / STATE_NAME)
        if self.dist:
            ids = [self.device.index] if self.device.type == "cuda" else None
            self.g_ddp = nn.parallel.DistributedDataParallel(self.g_train, device_ids=ids)
            self.d_ddp = nn.parallel.DistributedDataParallel(self.d, device_ids=ids)
        else:
            self.g_ddp, self.d_ddp = self.g_train, self.d
        fixed = torch.Generator().manual_seed(opts.seed + 12345)
        self.fixed = sample_fakes(cfg, 8, 0.0, fixed, self.device, dual=False)
        self.fixed_wide = torch.randn(4, cfg.local_latent_dim, latent_size(cfg), 3 * latent_size(cfg),
                                      generator=fixed).to(self.device)

    def _device(self, device: str) -> torch.device:
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        dev = torch.device(device)
        if dev.type == "cuda" and self.dist:
            dev = torch.device("cuda", self.dist[2])
        if dev.type == "cuda":
            torch.cuda.set_device(dev)
        return dev

    # ---- one iteration -------------------------------------------------------------------------
    def _autocast(self):
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.amp_dtype)

    def _fakes(self, batch: int):
        return sample_fakes(self.cfg, batch, self.opts.mixing, self.gen, self.device)

    def _reals(self):
        x, y = self.data.batch(self.opts.batch, self.gen)
        return x.to(self.device), y.to(self.device)

    def d_step(self) -> dict[str, float]:
        o = self.opts
        self.d.requires_grad_(True)
        f = self._fakes(o.batch)
        real, real_lab = self._reals()
        with torch.no_grad(), self._autocast():
            fake, _, _ = self.g_train(f.z_slots, f.z_local, f.coords, f.inject_index, gen=self.noise_gen)
        with self._autocast():
            logits, ac = self.d_ddp(torch.cat([fake, real]))
        logits, ac = logits.float(), ac.float()
        b = o.batch
        adv = losses.d_adversarial(logits[b:], logits[:b])
        ac_real, ac_fake = losses.coord_regression(ac[b:], real_lab), losses.coord_regression(ac[:b], f.labels)
        loss = adv + o.coord_weight * (ac_real + ac_fake)
        self._optimise(self.d_opt, self.d_scaler, loss, self.d)
        out = {"d_adv": adv.item(), "d_ac_real": ac_real.item(), "d_ac_fake": ac_fake.item(),
               "d_real_logit": logits[b:].mean().item(), "d_fake_logit": logits[:b].mean().item()}
        if self.step % o.d_reg_every == 0:
            real = real.detach().requires_grad_(True)
            logits, ac = self.d_ddp(real)
            r1 = losses.r1_penalty(logits, real)
            self._optimise(self.d_opt, None, o.r1_gamma / 2 * r1 * o.d_reg_every + 0 * (logits.sum() + ac.sum()),
                            self.d)  # the zero terms give every parameter a gradient, as DDP requires
            out["r1"] = r1.item()
        return out

    def g_step(self) -> dict[str, float]:
        o = self.opts
        self.d.requires_grad_(False)
        f = self._fakes(o.batch)
        with self._autocast():
            fake, structure, _ = self.g_ddp(f.z_slots, f.z_local, f.coords, f.inject_index, gen=self.noise_gen)
            logits, ac = self.d(fake)  # D frozen: the bare module, DDP need not sync it
        adv = losses.g_adversarial(logits.float())
        ac_fake = losses.coord_regression(ac.float(), f.labels)
        loss = adv + o.coord_weight * ac_fake
        out = {"g_adv": adv.item(), "g_ac_fake": ac_fake.item()}
        if structure is not None and o.diversity_weight:
            div = losses.diversity(f.z_local, structure.float())
            loss = loss + o.diversity_weight * div
            out["diversity"] = div.item()
        self._optimise(self.g_opt, self.g_scaler, loss, self.g)
        if self.step % o.g_reg_every == 0 and o.path_weight:
            pb = max(2, o.batch // 2 // 2 * 2)
            f = self._fakes(pb)
            fake, _, styles = self.g_ddp(f.z_slots, f.z_local, f.coords, f.inject_index, gen=self.noise_gen)
            noise = torch.randn(fake.shape, device=fake.device, dtype=fake.dtype, generator=self.noise_gen) / math.sqrt(fake.shape[2] * fake.shape[3])
            lengths = losses.path_lengths(fake, styles, noise)
            pen, self.mean_path = losses.path_penalty(lengths, self.mean_path)
            self._optimise(self.g_opt, None, o.path_weight * o.g_reg_every * pen + 0 * fake[0, 0, 0, 0], self.g)
            out.update(path=pen.item(), path_length=lengths.mean().item())
        return out

    def _optimise(self, opt, scaler, loss, module) -> None:
        if not torch.isfinite(loss):
            raise FloatingPointError(f"step {self.step}: loss is {loss.item()}; lower --lr or use --precision fp32")
        opt.zero_grad(set_to_none=True)
        if scaler is not None and scaler.is_enabled():
            scaler.scale(loss).backward()
            scaler.step(opt)
            scaler.update()
        else:
            loss.backward()
            opt.step()

    def iteration(self) -> dict[str, float]:
        self.g.train()
        logs = self.d_step()
        logs.update(self.g_step())
        images = (self.step + 1) * self.opts.batch * self.world
        ema_update(self.g_ema, self.g, ema_decay(self.opts, images, self.opts.batch * self.world))
        self.step += 1
        return logs

    # ---- outputs -------------------------------------------------------------------------------
    @torch.no_grad()
    def samples(self) -> None:
        f = self.fixed
        patches = self.g_ema(f.z_slots, f.z_local, f.coords)
        save_grid(patches, self.out / "samples" / f"patches_{self.step:07d}.png", cols=4)
        wide = self.g_ema(f.z_slots[:4], self.fixed_wide)  # official test grid, 3x wider
        save_grid(wide, self.out / "samples" / f"wide_{self.step:07d}.png", cols=1)

    def save(self) -> None:
        """Generator EMA as an igan model (latest + per step) and the resumable state
        (single process; under torchrun `run()` gathers every rank's RNG first)."""
        self._write(self.state_dict())

    def _rng_states(self) -> list:
        mine = {"gen": self.gen.get_state(), "noise": self.noise_gen.get_state()}
        if not self.dist:
            return [mine]
        allr = [None] * self.world
        torch.distributed.all_gather_object(allr, mine)
        return allr

    def state_dict(self, rng: list | None = None) -> dict:
        """Everything `load` restores; `rng`: every rank's RNG states (default: gathered now)."""
        rng = self._rng_states() if rng is None else rng
        return {"step": self.step, "config": self.cfg.to_json(), "options": json.dumps(dataclasses.asdict(self.opts)),
                "g": self.g.state_dict(), "d": self.d.state_dict(), "g_ema": self.g_ema.state_dict(),
                "g_optim": self.g_opt.state_dict(), "d_optim": self.d_opt.state_dict(),
                "g_scaler": self.g_scaler.state_dict(), "d_scaler": self.d_scaler.state_dict(),
                "mean_path_length": self.mean_path.detach().cpu(), "rng": rng,
                "history": {k: [list(p) for p in v] for k, v in self.history.items()}}

    def load(self, path: Path) -> None:
        st = load_state(path)
        if GeneratorConfig.from_json(st["config"]).architecture() != self.cfg.architecture():
            raise CheckpointError(f"{str(path)!r} was trained with another model config; resume with --config "
                                  f"{GeneratorConfig.from_json(st['config']).name}")
        self.g.load_state_dict(st["g"])
        self.d.load_state_dict(st["d"])
        self.g_ema.load_state_dict(st["g_ema"])
        self.g_opt.load_state_dict(st["g_optim"])
        self.d_opt.load_state_dict(st["d_optim"])
        self.g_scaler.load_state_dict(st["g_scaler"])
        self.d_scaler.load_state_dict(st["d_scaler"])
        self.step = int(st["step"])
        self.mean_path = st["mean_path_length"].to(self.device)
        rng = st["rng"]
        if len(rng) != self.world:
            raise CheckpointError(f"{str(path)!r} was saved by {len(rng)} processes; resume with the same number")
        mine = rng[self.rank]
        self.gen.set_state(mine["gen"])
        self.noise_gen.set_state(mine["noise"])
        self.history = {k: [tuple(p) for p in v] for k, v in st["history"].items()}

    def close(self) -> None:
        """Drop the DDP wrappers, then end the process group (after a barrier) if this trainer
        started it. A DDP reducer that outlives its gloo group holds it until interpreter
        teardown, where destroying its threads can abort the process ("terminate called
        without an active exception") after a finished run."""
        self.g_ddp = self.d_ddp = None
        gc.collect()
        if self._own_group and torch.distributed.is_initialized():
            torch.distributed.barrier()
            torch.distributed.destroy_process_group()
        self._own_group = False

    # ---- loop ----------------------------------------------------------------------------------
    def run(self) -> None:
        from tqdm import tqdm

        o = self.opts
        main = self.rank == 0
        if main:
            (self.out / "samples").mkdir(parents=True, exist_ok=True)
            (self.out / "checkpoints").mkdir(parents=True, exist_ok=True)
            (self.out / "config.json").write_text(self.cfg.to_json())
        bar = tqdm(total=o.steps, initial=self.step, disable=not (main and self.progress), unit="it",
                   dynamic_ncols=True, desc="igan-train")
        while self.step < o.steps:
            logs = self.iteration()
            logged = self.step % o.log_every == 0 or self.step == 1
            for k, v in logs.items():  # the regularisers whenever they run: every 16 and 4 steps never
                if logged or k in REGULARISERS:  # meet a logging step of 10 (the counter moves between)
                    self.history.setdefault(k, []).append((self.step, v))
            if logged:
                bar.set_postfix({k: f"{logs[k]:.3f}" for k in ("d_adv", "g_adv") if k in logs}, refresh=False)
            bar.update(1)
            last = self.step == o.steps
            if main and (self.step % o.sample_every == 0 or last):
                self.samples()
            if self.step % o.save_every == 0 or last:
                rng = self._rng_states()  # under torchrun a collective: every rank joins
                if main:
                    self._write(self.state_dict(rng))
        bar.close()

    def _write(self, state: dict) -> None:
        meta = {"trained_steps": str(self.step), "trainer": json.dumps(dataclasses.asdict(self.opts))}
        ckdir = self.out / "checkpoints"
        checkpoint.save(self.g_ema, ckdir / f"step_{self.step:07d}.safetensors", meta)
        checkpoint.save(self.g_ema, self.out / "model.safetensors", meta)
        for p in sorted(ckdir.glob("step_*.safetensors"))[:-self.opts.keep_checkpoints]:
            p.unlink()
        save_state(state, self.out / STATE_NAME)
        save_curves(self.history, self.out / "losses.png")
