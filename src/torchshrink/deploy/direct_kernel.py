"""Direct 3x3 convolution kernels for narrow layers, run a whole chain of layers per image.

Why: oneDNN (and ONNX Runtime's MLAS) vectorise a convolution over output channels, 16
float32 lanes per AVX-512 register. A layer with 8 output channels, which is what 50% channel
pruning leaves of a 16-channel ResNet stage, fills half of every register, so it costs about
twice as much per multiply-accumulate as the dense layer it came from (measured here: 20
against 9.5 ns per thousand MACs, batch 64, 32x32). That one fact caps how much of a MAC
reduction turns into a speedup.

What this does instead:

* **Vectorise over pixels.** Each register holds 16 (AVX-512) or 8 (AVX2-width) consecutive
  output pixels of one image row, so every lane does useful work whatever the channel count.
  Each input load feeds 8 output channels held in registers (up to 3 x 8 accumulators);
  bias, a residual add and ReLU are applied before the single store.
* **Zero-padded planes, no masks.** Activations live in per-image planes with a one-pixel
  zero border, so every tap of every output pixel is a plain load (lane masks for the border
  cost about 10% in an earlier version).
* **A chain of layers per image.** :func:`run_chain` runs consecutive layers (a ResNet stage)
  image by image: each thread takes whole images through every layer while their planes stay
  in its own cache, with no barrier between layers and one call from Python per chain. With
  fewer images than threads the layers are split across threads instead.

The C++ source is generated here and compiled with the system C++ compiler (``$CXX`` or
``g++``) into a per-user cache (``$TORCHSHRINK_CACHE_DIR``, default ``~/.cache/torchshrink``)
the first time it is needed; later processes load the cached library. It needs an x86-64 CPU
with AVX-512F and AVX-512VL; :func:`kernel_unavailable_reason` says why it cannot run
elsewhere. It links the OpenMP runtime PyTorch has already loaded, so it shares its threads.

Example:
    >>> import torch
    >>> x, w, b = torch.randn(2, 8, 4, 8), torch.randn(8, 8, 3, 3), torch.randn(8)
    >>> if kernel_unavailable_reason() is None:
    ...     layer = ChainLayer(src=0, res=-1, dst=1, weight=w, bias=b, relu=True)
    ...     (y,) = run_chain([layer], [x], inputs=[0], outputs=[1])
    ...     ok = torch.allclose(y, torch.relu(torch.conv2d(x, w, b, padding=1)), atol=1e-4)
    ... else:
    ...     ok = True
    >>> ok
    True
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import platform
import shutil
import subprocess
import tempfile
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch

# Output channels per tile. 8 runs as fast as 16 on 16- to 64-channel layers here (52-55
# GMAC/s per core either way) and wastes no lanes on 8-channel ones.
COB = 8
# Vectors per tile (3 x 8 = 24 accumulators); a row's last tile may hold 1 or 2.
TILE_VECTORS = 3
# (vector width, output channels per tile, vectors per tile).
TILES = tuple((vl, COB, p) for vl in (16, 8) for p in range(1, TILE_VECTORS + 1))
_FLAGS = ("-O3", "-std=c++17", "-mavx512f", "-mavx512vl", "-mfma", "-fopenmp", "-shared", "-fPIC")


def _tile_source(vl: int, cob: int, p: int) -> str:
    v, pre = ("__m512", "_mm512") if vl == 16 else ("__m256", "_mm256")
    lines = [
        f"static void tile_{vl}_{cob}_{p}(const float* __restrict x, const float* __restrict wp,",
        "    const float* __restrict bias, const float* __restrict res, float* __restrict y,",
        "    int ci_n, long ps, const long* __restrict voff, const long* __restrict toff,",
        "    int co0, int co_n, int relu) {",
    ]
    # Accumulators are named variables, not an array: GCC keeps an array of vectors in
    # memory and stores it back on every iteration, which costs about 2.5x here.
    for j in range(cob):
        lines.append(
            f"  {v} b{j} = {pre}_set1_ps(bias && co0 + {j} < co_n ? bias[co0 + {j}] : 0.f);"
        )
        lines += [f"  {v} a{q}_{j} = b{j};" for q in range(p)]
    lines += [f"  const long t{t} = toff[{t}];" for t in range(9)]
    lines += [
        "  for (int ci = 0; ci < ci_n; ++ci) {",
        f"    const float* wc = wp + (size_t)ci * 9 * {cob};",
    ]
    lines += [f"    const float* x{q} = x + ci * ps + voff[{q}];" for q in range(p)]
    for t in range(9):
        loads = " ".join(f"{v} i{q} = {pre}_loadu_ps(x{q} + t{t});" for q in range(p))
        lines.append(f"    {{ {loads}")
        for j in range(cob):
            fmas = " ".join(f"a{q}_{j} = {pre}_fmadd_ps(w, i{q}, a{q}_{j});" for q in range(p))
            lines.append(f"      {{ {v} w = {pre}_set1_ps(wc[{t * cob + j}]); {fmas} }}")
        lines.append("    }")
    lines.append("  }")
    for j in range(cob):
        for q in range(p):
            lines.append(
                f"  if (co0 + {j} < co_n) {{ long o = (co0 + {j}) * ps + voff[{q}]; {v} r = a{q}_{j};"
                f" if (res) r = {pre}_add_ps(r, {pre}_loadu_ps(res + o));"
                f" if (relu) r = {pre}_max_ps(r, {pre}_setzero_ps());"
                f" {pre}_storeu_ps(y + o, r); }}"
            )
    lines.append("}")
    return "\n".join(lines)


def _dispatch_source() -> str:
    lines = [
        "static void run_tile(int vl, int cob, int p, const float* x, const float* wp,",
        "    const float* bias, const float* res, float* y, int ci_n, long ps,",
        "    const long* voff, const long* toff, int co0, int co_n, int relu) {",
    ]
    for vl, cob, p in TILES:
        lines.append(
            f"  if (vl == {vl} && cob == {cob} && p == {p}) {{ tile_{vl}_{cob}_{p}(x, wp, bias,"
            " res, y, ci_n, ps, voff, toff, co0, co_n, relu); return; }"
        )
    lines.append("}")
    return "\n".join(lines)


_DRIVER = r"""
struct Geom {
  int h, w, vl, wp_;
  long ps;         // floats per padded plane: (h + 2) * (w + 2)
  long* voff;      // plane offset of every output vector, row by row
  long toff[9];    // offset of each tap relative to the output position
  int nvec;
};

static void geom_init(Geom* g, int h, int w, int vl) {
  g->h = h; g->w = w; g->vl = vl; g->wp_ = w + 2; g->ps = (long)(h + 2) * (w + 2);
  g->nvec = h * (w / vl);
  g->voff = (long*)malloc(sizeof(long) * (g->nvec + 1));
  int k = 0;
  for (int r = 0; r < h; ++r)
    for (int c = 0; c < w; c += vl) g->voff[k++] = (long)(r + 1) * g->wp_ + c + 1;
  for (int t = 0; t < 9; ++t) g->toff[t] = (long)(t / 3 - 1) * g->wp_ + (t % 3 - 1);
}

// desc, per layer: src slot, residual slot (-1: none), dst slot, ci, co, relu, cob, p
static void layer_tiles(const Geom* g, const int* d, const float* wpk, const float* bias,
                        float* ws, long slot_floats, long lo, long hi) {
  const int src = d[0], res = d[1], dst = d[2], ci = d[3], co = d[4], relu = d[5];
  const int cob = d[6], p = d[7];
  const int tiles = (g->nvec + p - 1) / p;
  for (long i = lo; i < hi; ++i) {
    const int b = (int)(i / tiles), tl = (int)(i % tiles);
    const int pe = g->nvec - tl * p < p ? g->nvec - tl * p : p;  // the last tile may be short
    run_tile(g->vl, cob, pe, ws + src * slot_floats, wpk + (size_t)b * ci * 9 * cob, bias,
             res >= 0 ? ws + res * slot_floats : nullptr, ws + dst * slot_floats, ci, g->ps,
             g->voff + (long)tl * p, g->toff, b * cob, co, relu);
  }
}

static long layer_work(const Geom* g, const int* d) {
  return (long)((d[4] + d[6] - 1) / d[6]) * ((g->nvec + d[7] - 1) / d[7]);
}

static void copy_in(const Geom* g, float* plane0, const float* src, int c) {
  for (int k = 0; k < c; ++k)
    for (int r = 0; r < g->h; ++r)
      memcpy(plane0 + k * g->ps + (long)(r + 1) * g->wp_ + 1, src + ((long)k * g->h + r) * g->w,
             sizeof(float) * g->w);
}

static void copy_out(const Geom* g, const float* plane0, float* dst, int c) {
  for (int k = 0; k < c; ++k)
    for (int r = 0; r < g->h; ++r)
      memcpy(dst + ((long)k * g->h + r) * g->w, plane0 + k * g->ps + (long)(r + 1) * g->wp_ + 1,
             sizeof(float) * g->w);
}

extern "C" {

// [Co][Ci][3][3] -> [ceil(Co/cob)][Ci][9][cob], zero padded.
void ts_pack_weights(const float* w, int co_n, int ci_n, int cob, float* out) {
  int nb = (co_n + cob - 1) / cob;
  memset(out, 0, sizeof(float) * (size_t)nb * ci_n * 9 * cob);
  for (int co = 0; co < co_n; ++co)
    for (int ci = 0; ci < ci_n; ++ci)
      for (int t = 0; t < 9; ++t)
        out[(((size_t)(co / cob) * ci_n + ci) * 9 + t) * cob + co % cob] =
            w[((size_t)co * ci_n + ci) * 9 + t];
}

// Runs nl layers (3x3, stride 1, pad 1) over n images of h x w; NCHW float32 in and out.
// ins / outs: image-batch tensors of value slots in_desc / out_desc (pairs: slot, channels).
int ts_chain(int n, int h, int w, int vl, int nl, const int* desc, const float* const* wts,
             const float* const* biases, int nin, const int* in_desc, const float* const* ins,
             int nout, const int* out_desc, float* const* outs, int nslots, int cmax,
             int threads) {
  if (w % vl || (vl != 8 && vl != 16)) return 1;
  for (int l = 0; l < nl; ++l) {
    const int cob = desc[l * 8 + 6], p = desc[l * 8 + 7];
    if (cob != COB || p < 1 || p > TILE_VECTORS) return 2;
  }
  Geom g;
  geom_init(&g, h, w, vl);
  const long slot_floats = (long)cmax * g.ps + 16;
  int err = 0;
  if (n >= threads) {
    // Whole images per thread: no barrier between layers, planes stay in the thread's cache.
#pragma omp parallel num_threads(threads)
    {
      float* ws = (float*)calloc((size_t)nslots * slot_floats, sizeof(float));
      if (!ws) {
#pragma omp atomic write
        err = 3;
      }
#pragma omp for schedule(static)
      for (int i = 0; i < n; ++i) {
        if (!ws) continue;
        for (int k = 0; k < nin; ++k)
          copy_in(&g, ws + in_desc[2 * k] * slot_floats,
                  ins[k] + (long)i * in_desc[2 * k + 1] * h * w, in_desc[2 * k + 1]);
        for (int l = 0; l < nl; ++l)
          layer_tiles(&g, desc + l * 8, wts[l], biases[l], ws, slot_floats, 0,
                      layer_work(&g, desc + l * 8));
        for (int k = 0; k < nout; ++k)
          copy_out(&g, ws + out_desc[2 * k] * slot_floats,
                   outs[k] + (long)i * out_desc[2 * k + 1] * h * w, out_desc[2 * k + 1]);
      }
      free(ws);
    }
  } else {
    // Fewer images than threads: one image at a time, each layer's tiles split across threads.
    float* ws = (float*)calloc((size_t)nslots * slot_floats, sizeof(float));
    if (!ws) { free(g.voff); return 3; }
    for (int i = 0; i < n; ++i) {
      for (int k = 0; k < nin; ++k)
        copy_in(&g, ws + in_desc[2 * k] * slot_floats,
                ins[k] + (long)i * in_desc[2 * k + 1] * h * w, in_desc[2 * k + 1]);
#pragma omp parallel num_threads(threads)
      for (int l = 0; l < nl; ++l) {
        const long work = layer_work(&g, desc + l * 8);
#pragma omp for schedule(static)
        for (long j = 0; j < work; ++j)
          layer_tiles(&g, desc + l * 8, wts[l], biases[l], ws, slot_floats, j, j + 1);
      }
      for (int k = 0; k < nout; ++k)
        copy_out(&g, ws + out_desc[2 * k] * slot_floats,
                 outs[k] + (long)i * out_desc[2 * k + 1] * h * w, out_desc[2 * k + 1]);
    }
    free(ws);
  }
  free(g.voff);
  return err;
}
}
"""


def kernel_source() -> str:
    """The complete C++ source of the kernel library."""
    head = "#include <immintrin.h>\n#include <stdint.h>\n#include <stdlib.h>\n#include <string.h>\n"
    head += f"#define COB {COB}\n#define TILE_VECTORS {TILE_VECTORS}\n"
    tiles = "\n".join(_tile_source(*t) for t in TILES)
    return head + tiles + "\n" + _dispatch_source() + _DRIVER


_LIB: ctypes.CDLL | None = None
_ERROR: str | None = None
_LOCK = threading.Lock()


def cache_dir() -> Path:
    """Where compiled kernels are kept: ``$TORCHSHRINK_CACHE_DIR`` or ``~/.cache/torchshrink``."""
    root = os.environ.get("TORCHSHRINK_CACHE_DIR")
    return Path(root) if root else Path.home() / ".cache" / "torchshrink"


def _cpu_flags() -> set[str]:
    try:
        text = Path("/proc/cpuinfo").read_text(errors="replace")
    except OSError:
        return set()
    for line in text.splitlines():
        if line.startswith("flags"):
            return set(line.split(":", 1)[1].split())
    return set()


def _build(target: Path) -> None:
    compiler = os.environ.get("CXX") or "g++"
    if shutil.which(compiler) is None:
        raise RuntimeError(f"no C++ compiler: {compiler!r} is not on PATH (set CXX)")
    target.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
        src = Path(tmp) / "direct_conv.cpp"
        src.write_text(kernel_source())
        out = Path(tmp) / target.name
        done = subprocess.run(
            [compiler, *_FLAGS, str(src), "-o", str(out)],
            capture_output=True,
            text=True,
            check=False,
        )
        if done.returncode != 0:
            raise RuntimeError(f"compiling the direct conv kernel failed: {done.stderr[-800:]}")
        os.replace(out, target)  # atomic: a concurrent process sees the old or the new file


def _library() -> ctypes.CDLL:
    if _LIB is not None:  # the common case, without the lock
        return _LIB
    return _load()


def _load() -> ctypes.CDLL:
    global _LIB, _ERROR
    with _LOCK:
        if _LIB is not None:
            return _LIB
        if _ERROR is not None:
            raise RuntimeError(_ERROR)
        try:
            machine = platform.machine().lower()
            missing = {"avx512f", "avx512vl", "fma"} - _cpu_flags()
            if machine not in ("x86_64", "amd64") or missing:
                raise RuntimeError(
                    "the direct conv kernel needs an x86-64 CPU with AVX-512F / VL and FMA "
                    f"(this is {machine}, missing {sorted(missing)})"
                )
            key = hashlib.sha256((kernel_source() + " ".join(_FLAGS)).encode()).hexdigest()[:16]
            path = cache_dir() / "kernels" / f"direct_conv_{key}.so"
            if not path.exists():
                _build(path)
            lib = ctypes.CDLL(str(path))
        except (RuntimeError, OSError) as exc:
            _ERROR = str(exc)
            raise RuntimeError(_ERROR) from exc
        ptr, i32 = ctypes.c_void_p, ctypes.c_int
        lib.ts_chain.argtypes = [i32] * 5 + [ptr] * 3 + [i32, ptr, ptr, i32, ptr, ptr] + [i32] * 3
        lib.ts_chain.restype = i32
        lib.ts_pack_weights.argtypes = [ptr, i32, i32, i32, ptr]
        _LIB = lib
        return lib


def kernel_unavailable_reason() -> str | None:
    """``None`` when the kernel can run here, else why not (no AVX-512, no compiler, ...)."""
    if _LIB is not None:
        return None
    try:
        _library()
    except RuntimeError as exc:
        return str(exc)
    return None


def vector_width(w: int) -> int:
    """Pixels per register for rows ``w`` wide: 16, 8, or 0 when the kernel cannot run them.

    Example:
        >>> vector_width(32), vector_width(8), vector_width(12)
        (16, 8, 0)
    """
    return 16 if w % 16 == 0 else 8 if w % 8 == 0 else 0


@dataclass
class ChainLayer:
    """One 3x3 / stride-1 / padding-1 layer of a chain: ``dst = [relu](conv(src) [+ res])``.

    ``src``, ``res`` and ``dst`` are value slots (``res=-1``: no residual); a slot may be
    reused once its value is dead. ``weight`` is ``[Co, Ci, 3, 3]`` float32.
    """

    src: int
    res: int
    dst: int
    weight: torch.Tensor
    bias: torch.Tensor | None
    relu: bool
    packed: torch.Tensor = field(init=False, repr=False)
    bias32: torch.Tensor | None = field(init=False, repr=False)

    def __post_init__(self) -> None:
        co, ci = int(self.weight.shape[0]), int(self.weight.shape[1])
        cob = COB
        w = self.weight.detach().to(torch.float32).contiguous()
        self.packed = torch.empty(-(-co // cob) * ci * 9 * cob, dtype=torch.float32)
        _library().ts_pack_weights(w.data_ptr(), co, ci, cob, self.packed.data_ptr())
        b = self.bias
        self.bias32 = None if b is None else b.detach().to(torch.float32).contiguous()

    @property
    def in_channels(self) -> int:
        return int(self.weight.shape[1])

    @property
    def out_channels(self) -> int:
        return int(self.weight.shape[0])


def run_chain(
    layers: Sequence[ChainLayer],
    values: Sequence[torch.Tensor],
    *,
    inputs: Sequence[int],
    outputs: Sequence[int],
) -> list[torch.Tensor]:
    """Run ``layers`` in order on a batch; returns the values of the ``outputs`` slots.

    Args:
        layers: the chain (each reads slots written by earlier layers or given as inputs).
        values: the input tensors, ``[N, C_k, H, W]`` float32 on the CPU, one per ``inputs``.
        inputs: the slot of each input.
        outputs: the slots to return, read at the end of the chain (so no later layer may
            overwrite an output's slot).

    Raises:
        ValueError: inputs the kernel does not take (see :func:`vector_width`).
        RuntimeError: the kernel is unavailable here (:func:`kernel_unavailable_reason`).
    """
    if not values or len(values) != len(inputs):
        raise ValueError("run_chain: give one tensor per input slot")
    n, _, h, w = values[0].shape
    vl = vector_width(int(w))
    for v in values:
        if v.dim() != 4 or v.dtype != torch.float32 or v.device.type != "cpu":
            raise ValueError(
                f"run_chain: expected 4-D float32 CPU tensors, got {v.dtype} {tuple(v.shape)}"
            )
        if (v.shape[0], v.shape[2], v.shape[3]) != (n, h, w):
            raise ValueError("run_chain: every input must have the same batch and H x W")
    if vl == 0:
        raise ValueError(f"run_chain: width {w} is not a multiple of 8")
    channels: dict[int, int] = {s: int(v.shape[1]) for s, v in zip(inputs, values, strict=True)}
    desc: list[int] = []
    for layer in layers:
        if channels.get(layer.src) != layer.in_channels:
            raise ValueError(
                f"run_chain: slot {layer.src} does not hold {layer.in_channels} channels"
            )
        if layer.res >= 0 and channels.get(layer.res) != layer.out_channels:
            raise ValueError(
                f"run_chain: residual slot {layer.res} does not hold {layer.out_channels} channels"
            )
        desc += [layer.src, layer.res, layer.dst, layer.in_channels, layer.out_channels]
        desc += [int(layer.relu), COB, TILE_VECTORS]
        channels[layer.dst] = layer.out_channels
    ins = [v.contiguous() for v in values]
    outs = [torch.empty((n, channels[s], h, w), dtype=torch.float32) for s in outputs]
    return _launch(
        layers, desc, ins, list(inputs), outs, list(outputs), channels, (int(n), int(h), int(w), vl)
    )


def _launch(
    layers: Sequence[ChainLayer],
    desc: list[int],
    ins: list[torch.Tensor],
    in_slots: list[int],
    outs: list[torch.Tensor],
    out_slots: list[int],
    channels: dict[int, int],
    nhwv: tuple[int, int, int, int],
) -> list[torch.Tensor]:
    n, h, w, vl = nhwv
    vp = ctypes.c_void_p
    c_desc = (ctypes.c_int * len(desc))(*desc)
    wts = (vp * len(layers))(*[layer.packed.data_ptr() for layer in layers])
    biases = (vp * len(layers))(
        *[0 if layer.bias32 is None else layer.bias32.data_ptr() for layer in layers]
    )
    in_desc = [x for s, t in zip(in_slots, ins, strict=True) for x in (s, int(t.shape[1]))]
    out_desc = [x for s, t in zip(out_slots, outs, strict=True) for x in (s, int(t.shape[1]))]
    rc = _library().ts_chain(
        n,
        h,
        w,
        vl,
        len(layers),
        c_desc,
        wts,
        biases,
        len(ins),
        (ctypes.c_int * len(in_desc))(*in_desc),
        (vp * len(ins))(*[t.data_ptr() for t in ins]),
        len(outs),
        (ctypes.c_int * len(out_desc))(*out_desc),
        (vp * len(outs))(*[t.data_ptr() for t in outs]),
        max(channels) + 1,
        max([*channels.values(), *(int(t.shape[1]) for t in ins)]),
        torch.get_num_threads(),
    )
    if rc != 0:
        raise RuntimeError(f"run_chain: the kernel failed (code {rc})")
    return outs
