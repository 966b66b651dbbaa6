"""Model runners: own the device, the precision and the speed of a forward pass.

`TorchRunner` is the reference backend (any device), `TritonRunner` the fused kernels; the
onnx backend lives in igan.export.onnx_runner. All implement `Runner`: `prepare(field)` folds
one image's styles into the weights once; `inputs(...)` gathers a batch of latent windows;
`run(prepared, batch)` turns it into float32 RGB.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Protocol

import torch

from . import exactcpu, fastcpu, walk
from .determinism import reproducible_cpu_convs
from .errors import CheckpointError, RequestError, option
from .fusion import StyleMaps
from .latent import Field
from .model import Generator, Prepared, SpatialPrepared
from .provenance import CPU_PATHS, DEFAULT_CPU_PATH

PRECISIONS = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


def resolve_device(device: str | torch.device | None) -> torch.device:
    """'auto'/None -> cuda if available else cpu; checks that a CUDA device exists."""
    if device in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except RuntimeError as e:
        raise RequestError(f"unknown device {device!r} ({option('device')}: cpu, cuda, cuda:N or auto)") from e
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise RequestError(f"{option('device')} {device!r} requested but CUDA is not available on this machine")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise RequestError(f"{option('device')} {device!r} does not exist: {torch.cuda.device_count()} CUDA "
                               "device(s)")
    elif dev.type != "cpu":
        raise RequestError(f"unsupported device {device!r} ({option('device')}: cpu, cuda, cuda:N or auto)")
    return dev


class Runner(Protocol):
    """What every backend implements (torch and triton here, onnx in igan.export.onnx_runner);
    the renderer and the executors use nothing else."""

    name: str
    config: object  # GeneratorConfig
    device: torch.device

    def prepare(self, field: Field, trunc: float = 1.0) -> object:
        """Everything of a forward pass that depends only on the image's styles, once;
        `trunc`: truncation of mapping(z_g) towards the mean style (1: none)."""

    def inputs(self, field: Field, windows: list[tuple[int, int]], n_h: int, n_w: int) -> "Batch":
        """The inputs of the z_l windows with first cells `windows` and shared size n_h x n_w."""

    def run(self, prepared: object, batch: "Batch") -> torch.Tensor:
        """float32 RGB [N, 3, H, W] (on the runner's device or the host)."""

    def peak_memory(self) -> int | None:
        """Peak device memory in bytes, where the device reports it."""


def gather_inputs(field: Field, windows: list[tuple[int, int]], n_h: int, n_w: int, device) -> "Batch":
    """A Batch of z_l windows (first cell (row, col), shared size n_h x n_w) on `device`:
    latents, coordinates, one noise map per TS conv and, for a fused field, the style maps."""
    parts = [field.window(r, c, n_h, n_w, device) for r, c in windows]
    z = torch.stack([p[0] for p in parts])
    coords = None if parts[0][1] is None else torch.stack([p[1] for p in parts])
    noises = [torch.stack([p[2][i] for p in parts]) for i in range(field.config.num_convs)]
    maps = None
    if field.fused:
        maps = StyleMaps.stack([field.style_maps(r, c, n_h, n_w) for r, c in windows], device)
    return Batch(z, coords, noises, maps)


@dataclass
class Batch:
    """Inputs of a batch of latent windows of one image, on the runner's device."""

    local_latent: torch.Tensor  # [N, C, Hz, Wz]
    coords: torch.Tensor | None  # [N, ncoord, Hz, Wz]
    noises: list[torch.Tensor]  # [N, 1, h_i, w_i] per TS conv
    style_maps: object = None  # fusion.StyleMaps [N, S, h, w] per grid, for a fused field


class TorchRunner:
    """The torch backend. On a CPU `cpu_path` (provenance.CPU_PATHS) chooses how it computes:
    "exact" (the default: engine/exactcpu.py, GEMMs in MKL's strict mode, the same bytes under
    any tile, batch, worker, thread or torchrun split), "reference" (engine/determinism.py:
    im2col + GEMM, igan 0.2's path) or "fast-0.4" (engine/fastcpu.py: oneDNN, channels-last,
    the default of igan 0.3-0.4, whose bytes follow the split); style fusion always takes the
    reference path. On a GPU the path changes nothing: cuDNN runs deterministically either way."""

    name = "torch"

    def __init__(self, model: Generator, device="cpu", precision: str = "fp32", cpu_path: str = DEFAULT_CPU_PATH):
        if not isinstance(model, Generator):
            raise CheckpointError(f"the {self.name} backend needs a checkpoint, not {type(model).__name__} "
                                  f"(an ONNX export renders with {option('backend')} onnx)")
        if precision not in PRECISIONS:
            raise RequestError(f"unknown {option('precision')} {precision!r}; choose from {', '.join(PRECISIONS)}")
        if cpu_path not in CPU_PATHS:
            raise RequestError(f"unknown {option('cpu_path')} {cpu_path!r}; choose from {', '.join(CPU_PATHS)}")
        self.device = resolve_device(device)
        self.dtype = PRECISIONS[precision]
        if self.device.type == "cpu" and self.dtype == torch.float16:
            raise RequestError(f"{option('precision')} fp16 is not supported on CPU (use fp32 or bf16)")
        self.model = model.to(self.device).eval().requires_grad_(False)
        self.config = model.config
        self.cpu_path = cpu_path
        # the path that runs: "exact", "fast-0.4" or "reference" on a CPU (the subclasses, which
        # run their own kernels, and a GPU take the reference code)
        own = self.device.type == "cpu" and type(self) is TorchRunner
        self.path = cpu_path if own else "reference"
        self.fast = self.path == "fast-0.4"
        # the 0.4 fast path pads a short last batch, so every forward of a render has one shape
        self.pads_batches = self.fast

    def _context(self):
        stack = contextlib.ExitStack()
        stack.enter_context(torch.inference_mode())
        if self.device.type == "cpu":
            stack.enter_context(reproducible_cpu_convs())
        elif self.dtype == torch.float32:
            # fp32 means fp32: no TF32 (official outputs were computed without it), and the
            # same cuDNN algorithm on every run.
            stack.enter_context(torch.backends.cudnn.flags(enabled=True, benchmark=False, deterministic=True,
                                                           allow_tf32=False))
        return stack

    def prepare(self, field: Field, trunc: float = 1.0) -> Prepared | SpatialPrepared:
        with self._context():
            if field.fused:  # spatially varying styles (fusion.FusedField)
                latents = [(z.to(self.device, torch.float32), None if w is None else w.to(self.device, torch.float32))
                           for z, w in field.latents]
                return self.model.prepare_spatial(latents, trunc).to(dtype=self.dtype)
            z = field.global_latent().to(self.device, torch.float32)
            styles = field.styles()
            styles = None if styles is None else styles.to(self.device, torch.float32)
            prepared = self.model.prepare(z, styles, trunc).to(dtype=self.dtype)
            if self.path == "exact":
                return exactcpu.prepare(self.model, prepared)
            return fastcpu.prepare(self.model, prepared) if self.path == "fast-0.4" else prepared

    def inputs(self, field: Field, windows: list[tuple[int, int]], n_h: int, n_w: int) -> Batch:
        return gather_inputs(field, windows, n_h, n_w, self.device)

    def run(self, prepared: Prepared, batch: Batch) -> torch.Tensor:
        """float32 RGB [N, 3, H, W] on the runner's device."""
        if isinstance(prepared, (exactcpu.ExactPrepared, fastcpu.FastPrepared)):  # the CPU paths of their own
            path = exactcpu if isinstance(prepared, exactcpu.ExactPrepared) else fastcpu
            with torch.inference_mode():
                cast = self.dtype
                return path.synthesize(self.config, prepared, batch.local_latent.to(cast), batch.coords,
                                       [n.to(cast) for n in batch.noises]).float()
        with self._context():
            cast = self.dtype
            if isinstance(prepared, SpatialPrepared):
                return self.model.synthesize_spatial(
                    prepared, batch.local_latent.to(cast), batch.coords, [n.to(cast) for n in batch.noises],
                    batch.style_maps, impl="ref").float()
            out = self.model.synthesize(
                prepared, batch.local_latent.to(cast), None if batch.coords is None else batch.coords.to(cast),
                [n.to(cast) for n in batch.noises])
            return out.float()

    def peak_memory(self) -> int | None:
        if self.device.type == "cuda":
            return torch.cuda.max_memory_allocated(self.device)
        return None




@dataclass
class PackedImage:
    """One image's weights in the layouts the Triton kernels read (see igan.kernels.conv)."""

    prepared: Prepared
    ss: list[torch.Tensor]  # packed [KH*KW*Cin, Cout]
    convs: list  # packed [K, Cout] for 3x3 convs; four packed phases for upsampling convs
    rgbs: list[torch.Tensor]
    noise_strengths: list[float]  # read once here: .item() on a GPU tensor would sync every layer


class TritonRunner(TorchRunner):
    """Every conv of the generator through the fused Triton kernels (CUDA; or the CPU
    interpreter with TRITON_INTERPRET=1, for tests). Activations are channels-last on CUDA;
    the RGB path accumulates in float32 whatever the precision."""

    name = "triton"

    def __init__(self, model: Generator, device="cuda", precision: str = "fp32"):
        from igan.kernels import tracing, triton_unavailable_reason

        dev = resolve_device(device)
        reason = triton_unavailable_reason(dev)
        if reason:
            raise RequestError(f"the triton backend cannot run on {dev}: {reason}")
        # Inside igan.kernels.aot.capture() nothing runs: launches are recorded to be compiled
        # for a GPU, so the runner acts as on CUDA (any precision, channels-last) on CPU tensors.
        traced = tracing()
        if dev.type == "cpu" and precision != "fp32" and not traced:
            raise RequestError(f"the Triton interpreter computes bf16/fp16 wrongly; use {option('precision')} fp32 "
                               "on CPU")
        super().__init__(model, dev, "fp32" if traced else precision)
        self.dtype = PRECISIONS[precision]
        self.channels_last = dev.type == "cuda" or traced

    def prepare(self, field: Field, trunc: float = 1.0) -> PackedImage:
        from igan.kernels.conv import pack_weight
        from igan.kernels.upsample import phase_weights

        p = super().prepare(field, trunc)
        if isinstance(p, SpatialPrepared):
            return p
        convs = [[pack_weight(s) for s in phase_weights(w)] if i % 2 == 0 else pack_weight(w)
                 for i, w in enumerate(p.convs)]
        strengths = [float(conv.noise.weight) for conv in self.model.texture_synthesizer.convs]
        return PackedImage(p, [pack_weight(w) for w in p.ss], convs, [pack_weight(w) for w in p.rgbs], strengths)

    def run(self, packed: PackedImage | SpatialPrepared, batch: Batch) -> torch.Tensor:
        model = self.model
        fmt = torch.channels_last if self.channels_last else torch.contiguous_format
        with torch.inference_mode():
            x = batch.local_latent.to(self.dtype).contiguous(memory_format=fmt)
            noises = [n.to(self.dtype) for n in batch.noises]
            if isinstance(packed, SpatialPrepared):
                return model.synthesize_spatial(packed, x, batch.coords, noises, batch.style_maps,
                                                impl="triton").contiguous()
            coords = None if batch.coords is None else batch.coords.to(self.dtype)
            return walk.synthesize(model.config, TritonOps(model, packed), x, coords, noises).contiguous()


class TritonOps:
    """The fused Triton kernels' layers (walk.Ops) on one image's packed weights: bias,
    noise and activation in the conv epilogue, the RGB skip accumulated in float32."""

    def __init__(self, model: Generator, packed: PackedImage):
        self.model, self.packed = model, packed

    def ss_layer(self, l, x, coords, offset):
        from igan.kernels.conv import conv_triton

        layer = self.model.structure_synthesizer.layers[l]
        return conv_triton(x, self.packed.prepared.ss[l], coords=coords, coords_offset=offset,
                           bias=layer.activate.bias, act=True, packed=self.packed.ss[l])

    def conv(self, i, x, noise):
        from igan.kernels.conv import conv_triton
        from igan.kernels.upsample import upconv_triton

        w, pk = self.packed.prepared.convs[i], self.packed.convs[i]
        common = dict(noise=noise, noise_strength=self.packed.noise_strengths[i],
                      bias=self.model.texture_synthesizer.convs[i].activate.bias, act=True)
        return upconv_triton(x, w, phases=pk, **common) if i % 2 == 0 else conv_triton(x, w, packed=pk, **common)

    def to_rgb(self, k, x, skip):
        from igan.kernels.conv import conv_triton

        return conv_triton(x, self.packed.prepared.rgbs[k], bias=self.model.texture_synthesizer.to_rgbs[k].bias.view(-1),
                           skip=skip, packed=self.packed.rgbs[k], out_dtype=torch.float32)
