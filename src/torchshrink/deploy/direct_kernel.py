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
* **Zero-padded planes, no masks.** Activations live in per-image planes with a zero
  border, each row starting on a vector boundary, so every tap of every output pixel is a
  plain load and every store is aligned (lane masks for the border
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
# Vectors per tile (3 x 8 = 24 accumulators); the last tile of a layer may hold 1 or 2.
TILE_VECTORS = 3
# Layer kinds: (taps, stride) - 3x3 or 1x1, stride 1 or 2.
KINDS = ((9, 1), (9, 2), (1, 1), (1, 2))
# (vector width, vectors per tile, taps, stride).
TILES = tuple(
    (vl, p, taps, stride)
    for vl in (16, 8)
    for p in range(1, TILE_VECTORS + 1)
    for taps, stride in KINDS
)
_FLAGS = ("-O3", "-std=c++17", "-mavx512f", "-mavx512vl", "-mfma", "-fopenmp", "-shared", "-fPIC")


def _tile_source(vl: int, p: int, taps: int, stride: int, *, fast: bool = False) -> str:
    """One tile function: ``p`` vectors of ``vl`` output pixels by ``COB`` output channels.

    ``fast``: a template over the residual and the ReLU for tiles whose channels are all
    real (no channel past the layer's last) and whose vectors are all whole (no lane past a
    row): no per-store checks. Called through a pointer chosen once per layer, the checks of
    the general version cost about 2% on 8-channel layers.
    """
    v, pre = ("__m512", "_mm512") if vl == 16 else ("__m256", "_mm256")
    mask = "__mmask16" if vl == 16 else "__mmask8"
    cob = COB
    name = f"tile{'f' if fast else ''}_{vl}_{p}_{taps}_{stride}"
    lines = ["template <int RES, int RELU>"] if fast else []
    lines += [
        f"static void {name}(const float* __restrict x,",
        "    const float* __restrict wp, const float* __restrict bias,",
        "    const float* __restrict res, float* __restrict y, int ci_n, long ps_in, long ps_out,",
        "    const long* __restrict vin, const long* __restrict vout,",
        "    const int* __restrict vmask, const long* __restrict toff, int co0, int co_n,",
        "    int relu) {",
    ]
    if stride == 2:  # even lanes of two consecutive vectors: every other input column
        idx = ", ".join(str(2 * i) for i in reversed(range(vl)))
        if vl == 16:
            lines.append(f"  const __m512i even = _mm512_set_epi32({idx});")
        else:
            lines.append(f"  const __m256i even = _mm256_set_epi32({idx});")
    # Accumulators are named variables, not an array: GCC keeps an array of vectors in
    # memory and stores it back on every iteration, which costs about 2.5x here.
    for j in range(cob):
        real = "" if fast else f" && co0 + {j} < co_n"
        lines.append(f"  {v} b{j} = {pre}_set1_ps(bias{real} ? bias[co0 + {j}] : 0.f);")
        lines += [f"  {v} a{q}_{j} = b{j};" for q in range(p)]
    lines += [f"  const long t{t} = toff[{t}];" for t in range(taps)]
    lines += [
        "  for (int ci = 0; ci < ci_n; ++ci) {",
        f"    const float* wc = wp + (size_t)ci * {taps * cob};",
    ]
    lines += [f"    const float* x{q} = x + ci * ps_in + vin[{q}];" for q in range(p)]
    for t in range(taps):
        if stride == 1:
            loads = " ".join(f"{v} i{q} = {pre}_loadu_ps(x{q} + t{t});" for q in range(p))
        else:
            loads = " ".join(
                f"{v} i{q} = {pre}_permutex2var_ps({pre}_loadu_ps(x{q} + t{t}), even,"
                f" {pre}_loadu_ps(x{q} + t{t} + {vl}));"
                for q in range(p)
            )
        lines.append(f"    {{ {loads}")
        for j in range(cob):
            fmas = " ".join(f"a{q}_{j} = {pre}_fmadd_ps(w, i{q}, a{q}_{j});" for q in range(p))
            lines.append(f"      {{ {v} w = {pre}_set1_ps(wc[{t * cob + j}]); {fmas} }}")
        lines.append("    }")
    lines.append("  }")
    for j in range(cob):
        for q in range(p):
            if fast:
                lines.append(
                    f"  {{ long o = (co0 + {j}) * ps_out + vout[{q}]; {v} r = a{q}_{j};"
                    f" if (RES) r = {pre}_add_ps(r, {pre}_loadu_ps(res + o));"
                    f" if (RELU) r = {pre}_max_ps(r, {pre}_setzero_ps());"
                    f" {pre}_storeu_ps(y + o, r); }}"
                )
                continue
            # A row's last vector may be part padding (width not a multiple of the vector):
            # its lanes past the row are computed from whatever lies there and not stored.
            lines.append(
                f"  if (co0 + {j} < co_n) {{ long o = (co0 + {j}) * ps_out + vout[{q}];"
                f" {v} r = a{q}_{j}; if (res) r = {pre}_add_ps(r, {pre}_loadu_ps(res + o));"
                f" if (relu) r = {pre}_max_ps(r, {pre}_setzero_ps());"
                f" if (vmask[{q}] < 0) {pre}_storeu_ps(y + o, r);"
                f" else {pre}_mask_storeu_ps(y + o, ({mask}) vmask[{q}], r); }}"
            )
    lines.append("}")
    return "\n".join(lines)


def _dispatch_source() -> str:
    lines = [
        "typedef void (*TileFn)(const float*, const float*, const float*, const float*, float*,",
        "    int, long, long, const long*, const long*, const int*, const long*, int, int, int);",
        "// Looked up once per layer (and once more for its short last tile), not per tile.",
        "static TileFn get_tile(int vl, int p, int taps, int stride) {",
    ]
    for vl, p, taps, stride in TILES:
        lines.append(
            f"  if (vl == {vl} && p == {p} && taps == {taps} && stride == {stride})"
            f" return tile_{vl}_{p}_{taps}_{stride};"
        )
    lines += ["  return nullptr;", "}"]
    lines += [
        "// The full tile without checks, for a layer's residual / ReLU (see _tile_source).",
        "static TileFn get_fast(int vl, int taps, int stride, int res, int relu) {",
    ]
    for vl, p, taps, stride in TILES:
        if p != TILE_VECTORS:
            continue
        name = f"tilef_{vl}_{p}_{taps}_{stride}"
        lines.append(f"  if (vl == {vl} && taps == {taps} && stride == {stride})")
        lines.append(
            f"    return res ? (relu ? {name}<1, 1> : {name}<1, 0>)"
            f" : (relu ? {name}<0, 1> : {name}<0, 0>);"
        )
    lines += ["  return nullptr;", "}"]
    return "\n".join(lines)


_DRIVER = r"""
// 16 or 8 pixels per register, whichever leaves fewer lanes past the end of a row.
static inline int vector_width(int w) {
  return (w + 15) / 16 * 16 - w <= (w + 7) / 8 * 8 - w ? 16 : 8;
}
// A plane of h x w pixels: each row starts with A = vector_width(w) floats of padding (the last
// of them is the left zero border) and holds the row rounded up to A floats, so every row's
// data starts on a vector boundary: output stores, residual loads and the centre column's
// input loads are aligned (1-2% faster on 8-channel layers than a one-pixel border). The right
// border is the float after the row: the next row's padding when w is a multiple of A. A zero
// row above and below, and A floats after the last row.
static inline long row_stride(int w) {
  const int a = vector_width(w);
  return (long)(w + a - 1) / a * a + a;
}
static inline long plane(int h, int w) { return (long)(h + 2) * row_stride(w) + vector_width(w); }
static inline long pos(int w, int r, int c) {
  return (long)(r + 1) * row_stride(w) + vector_width(w) + c;
}

// desc, per layer (DESC ints): src slot, residual slot (-1: none), dst slot, ci, co, relu,
// taps (9 or 1), stride (1 or 2), input h, input w, output h, output w.
#define DESC 12

struct Plan {             // per layer: where each output vector is and where it reads
  int vl, nvec, taps, stride;
  long ps_in, ps_out;
  long* vin;              // input plane offset of the centre tap of each output vector
  long* vout;             // output plane offset of each output vector
  int* vmask;             // lanes inside the row (-1: all of them)
  char* whole;            // per tile of TILE_VECTORS vectors: every vector all inside its row
  long toff[9];
};

static void plan_init(Plan* pl, const int* d) {
  const int taps = d[6], stride = d[7], hi = d[8], wi = d[9], ho = d[10], wo = d[11];
  pl->taps = taps; pl->stride = stride;
  pl->vl = vector_width(wo);
  const int per_row = (wo + pl->vl - 1) / pl->vl;
  pl->nvec = ho * per_row;
  pl->ps_in = plane(hi, wi); pl->ps_out = plane(ho, wo);
  pl->vin = (long*)malloc(sizeof(long) * pl->nvec);
  pl->vout = (long*)malloc(sizeof(long) * pl->nvec);
  pl->vmask = (int*)malloc(sizeof(int) * pl->nvec);
  int k = 0;
  for (int r = 0; r < ho; ++r)
    for (int c = 0; c < wo; c += pl->vl, ++k) {
      pl->vout[k] = pos(wo, r, c);
      pl->vin[k] = pos(wi, r * stride, c * stride);
      pl->vmask[k] = wo - c >= pl->vl ? -1 : (1 << (wo - c)) - 1;
    }
  const int tiles = (pl->nvec + TILE_VECTORS - 1) / TILE_VECTORS;
  pl->whole = (char*)malloc(tiles);
  for (int t = 0; t < tiles; ++t) {
    pl->whole[t] = 1;
    for (int q = t * TILE_VECTORS; q < (t + 1) * TILE_VECTORS && q < pl->nvec; ++q)
      if (pl->vmask[q] >= 0) pl->whole[t] = 0;
  }
  for (int t = 0; t < 9; ++t)
    pl->toff[t] = taps == 9 ? (long)(t / 3 - 1) * row_stride(wi) + (t % 3 - 1) : 0;
}

static long layer_work(const Plan* pl, const int* d) {
  return (long)((d[4] + COB - 1) / COB) * ((pl->nvec + TILE_VECTORS - 1) / TILE_VECTORS);
}

static void layer_tiles(const Plan* pl, const int* d, const float* wpk, const float* bias,
                        float* ws, long slot_floats, long lo, long hi) {
  const int src = d[0], res = d[1], dst = d[2], ci = d[3], co = d[4], relu = d[5];
  const int tiles = (pl->nvec + TILE_VECTORS - 1) / TILE_VECTORS;
  const TileFn full = get_tile(pl->vl, TILE_VECTORS, pl->taps, pl->stride);
  const TileFn fast = get_fast(pl->vl, pl->taps, pl->stride, res >= 0, relu);
  const float* x = ws + src * slot_floats;
  const float* r = res >= 0 ? ws + res * slot_floats : nullptr;
  float* y = ws + dst * slot_floats;
  // Tile i is channel block i / tiles, vectors (i % tiles) * TILE_VECTORS on.
  int b = (int)(lo / tiles), tl = (int)(lo % tiles);
  for (long i = lo; i < hi; ++i) {
    const int left = pl->nvec - tl * TILE_VECTORS;
    const long v0 = (long)tl * TILE_VECTORS;
    // The last tile of a layer may be short; a tile with a channel past the last one or a
    // vector past the end of a row takes the checked version.
    TileFn fn = left >= TILE_VECTORS ? full : get_tile(pl->vl, left, pl->taps, pl->stride);
    if (fn == full && (b + 1) * COB <= co && pl->whole[tl]) fn = fast;
    fn(x, wpk + (size_t)b * ci * pl->taps * COB, bias, r, y, ci, pl->ps_in, pl->ps_out,
       pl->vin + v0, pl->vout + v0, pl->vmask + v0, pl->toff, b * COB, co, relu);
    if (++tl == tiles) {
      tl = 0;
      ++b;
    }
  }
}

// The borders of a slot's planes must be zero for the geometry of the value written into it.
// A slot reused for a value of another size (or with more channels) gets those borders zeroed
// first: the row above and below, the left and right border of each row (what lies past a row
// inside its last vector is read but never stored). The state (h, w, channels whose borders
// are clean) is per workspace, h = -1 meaning all zero.
struct SlotState { int h, w, c; };

static void clear_borders(float* p, int h, int w) {
  const long rs = row_stride(w), a = vector_width(w);
  memset(p, 0, sizeof(float) * rs);                        // the row above
  memset(p + (h + 1) * rs, 0, sizeof(float) * (rs + a));   // the row below and the tail
  // Left and right of every row; the right border of the row above is the first float of
  // the first row (when w is a multiple of the vector), so it is cleared too.
  for (int r = -1; r < h; ++r) p[pos(w, r, -1)] = p[pos(w, r, w)] = 0.f;
}

static void prepare(float* slot0, SlotState* st, int c, int h, int w) {
  if (st->h < 0) { st->h = h; st->w = w; st->c = c; return; }
  const long ps = plane(h, w);
  int from = c;
  if (st->h != h || st->w != w) {
    from = 0;
    st->h = h; st->w = w; st->c = c;
  } else if (c > st->c) {
    from = st->c;
    st->c = c;
  }
  for (int k = from; k < c; ++k) clear_borders(slot0 + k * ps, h, w);
}

// io: (slot, channels, h, w) per tensor
static void copy_in(float* plane0, const float* src, const int* io) {
  const int c = io[1], h = io[2], w = io[3];
  const long ps = plane(h, w);
  for (int k = 0; k < c; ++k)
    for (int r = 0; r < h; ++r)
      memcpy(plane0 + k * ps + pos(w, r, 0), src + ((long)k * h + r) * w, sizeof(float) * w);
}

static void copy_out(const float* plane0, float* dst, const int* io) {
  const int c = io[1], h = io[2], w = io[3];
  const long ps = plane(h, w);
  for (int k = 0; k < c; ++k)
    for (int r = 0; r < h; ++r)
      memcpy(dst + ((long)k * h + r) * w, plane0 + k * ps + pos(w, r, 0), sizeof(float) * w);
}

struct Work {             // one thread's (or one image loop's) planes and their border state
  float* ws;
  SlotState* st;
  long slot_floats;
};

static void work_free(Work* wk) {
  free(wk->ws);
  free(wk->st);
  wk->ws = nullptr;
  wk->st = nullptr;
}

// 64-byte aligned and zeroed (slots are whole vectors apart, so every row start is aligned).
static int work_alloc(Work* wk, int nslots, long slot_floats) {
  const size_t bytes = ((size_t)nslots * slot_floats * sizeof(float) + 63) / 64 * 64;
  wk->slot_floats = slot_floats;
  wk->ws = (float*)aligned_alloc(64, bytes);
  wk->st = (SlotState*)malloc(sizeof(SlotState) * nslots);
  if (!wk->ws || !wk->st) {
    work_free(wk);
    return 0;
  }
  memset(wk->ws, 0, bytes);
  for (int k = 0; k < nslots; ++k) wk->st[k].h = -1;
  return 1;
}

// Each thread keeps its workspace between calls (OpenMP threads are pooled): no allocation,
// page faults or clearing per call, and the border state stays valid (it describes the memory).
// Only up to CACHED_BYTES: a larger one (large images) is allocated into `own` for the call,
// which the caller frees, so that no thread holds it afterwards.
#define CACHED_BYTES (8L << 20)
struct CachedWork {
  Work w = {nullptr, nullptr, 0};
  int nslots = 0;
  ~CachedWork() { work_free(&w); }
};

static Work* thread_work(int nslots, long slot_floats, Work* own) {
  static thread_local CachedWork cw;
  if (cw.w.ws && cw.nslots == nslots && cw.w.slot_floats == slot_floats) return &cw.w;
  if ((long)nslots * slot_floats * (long)sizeof(float) > CACHED_BYTES)
    return work_alloc(own, nslots, slot_floats) ? own : nullptr;
  work_free(&cw.w);
  cw.nslots = 0;
  if (!work_alloc(&cw.w, nslots, slot_floats)) return nullptr;
  cw.nslots = nslots;
  return &cw.w;
}

static void image_in(Work* wk, int nin, const int* in_io, const float* const* ins, int i) {
  for (int k = 0; k < nin; ++k) {
    const int* io = in_io + 4 * k;
    prepare(wk->ws + io[0] * wk->slot_floats, wk->st + io[0], io[1], io[2], io[3]);
    copy_in(wk->ws + io[0] * wk->slot_floats, ins[k] + (long)i * io[1] * io[2] * io[3], io);
  }
}

// A head: the channel means of a value (global average pooling), then, when nk > 0,
// out[k] = hb[k] + sum_c hw[k][c] * mean[c] for k < nk; nk = 0: the means themselves.
struct Head { int nk; const float* hw; const float* hb; };

static void pool_out(const float* plane0, float* dst, const int* io, const Head* hd) {
  const int c = io[1], h = io[2], w = io[3];
  const long ps = plane(h, w);
  float* means = hd->nk > 0 ? (float*)alloca(sizeof(float) * c) : dst;
  for (int ch = 0; ch < c; ++ch) {
    float sum = 0.f;
    for (int r = 0; r < h; ++r) {
      const float* row = plane0 + ch * ps + pos(w, r, 0);
      for (int col = 0; col < w; ++col) sum += row[col];
    }
    means[ch] = sum / (float)((long)h * w);
  }
  for (int k = 0; k < hd->nk; ++k) {
    float acc = hd->hb ? hd->hb[k] : 0.f;
    for (int ch = 0; ch < c; ++ch) acc += hd->hw[(long)k * c + ch] * means[ch];
    dst[k] = acc;
  }
}

// heads: per output, nullptr (copy the planes out) or the head computed from them.
static void image_out(const Work* wk, int nout, const int* out_io, const Head* const* heads,
                      float* const* outs, int i) {
  for (int k = 0; k < nout; ++k) {
    const int* io = out_io + 4 * k;
    const float* src = wk->ws + io[0] * wk->slot_floats;
    const Head* hd = heads ? heads[k] : nullptr;
    if (hd)
      pool_out(src, outs[k] + (long)i * (hd->nk > 0 ? hd->nk : io[1]), io, hd);
    else
      copy_out(src, outs[k] + (long)i * io[1] * io[2] * io[3], io);
  }
}

static void prepare_dst(Work* wk, const int* d) {
  prepare(wk->ws + d[2] * wk->slot_floats, wk->st + d[2], d[4], d[10], d[11]);
}

extern "C" {

// Floats in one channel plane of an h x w value (prepare_chain sizes the slots with it).
long ts_plane_floats(int h, int w) { return plane(h, w); }

// [Co][Ci][taps] -> [ceil(Co/COB)][Ci][taps][COB], zero padded.
void ts_pack_weights(const float* w, int co_n, int ci_n, int taps, float* out) {
  int nb = (co_n + COB - 1) / COB;
  memset(out, 0, sizeof(float) * (size_t)nb * ci_n * taps * COB);
  for (int co = 0; co < co_n; ++co)
    for (int ci = 0; ci < ci_n; ++ci)
      for (int t = 0; t < taps; ++t)
        out[(((size_t)(co / COB) * ci_n + ci) * taps + t) * COB + co % COB] =
            w[((size_t)co * ci_n + ci) * taps + t];
}

// Runs nl layers over n images; NCHW float32 in and out. ins / outs: batch tensors of the
// slots in in_io / out_io (4 ints each: slot, channels, h, w). slot_floats: floats per slot.
int ts_chain(int n, int nl, const int* desc, const float* const* wts,
             const float* const* biases, int nin, const int* in_io, const float* const* ins,
             int nout, const int* out_io, float* const* outs, const int* head_k,
             const float* const* head_w, const float* const* head_b, int nslots, long slot_floats,
             int threads) {
  if (nl <= 0 || nslots <= 0 || threads <= 0) return 1;
  for (int l = 0; l < nl; ++l) {
    const int* d = desc + l * DESC;
    const int taps = d[6], stride = d[7], hi = d[8], wi = d[9], ho = d[10], wo = d[11];
    if ((taps != 9 && taps != 1) || (stride != 1 && stride != 2)) return 1;
    if (wo < 1 || ho < 1 || hi != ho * stride || wi != wo * stride) return 2;
    // Every value must fit its slot with room for a row's last vector to read past the end.
    if (d[3] * plane(hi, wi) + 32 > slot_floats || d[4] * plane(ho, wo) + 32 > slot_floats)
      return 4;
  }
  // head_k (nullable): per output, -1 (the planes), 0 (the channel means) or the number of
  // rows of the linear layer head_w[k] ([rows][channels]) with bias head_b[k] (nullable).
  Head head_store[8];
  const Head* head_ptr[8];
  const Head* const* heads = nullptr;
  if (head_k) {
    if (nout > 8) return 1;
    for (int k = 0; k < nout; ++k) {
      head_ptr[k] = nullptr;
      if (head_k[k] < 0) continue;
      if (head_k[k] > 0 && (!head_w || !head_w[k])) return 1;
      head_store[k] = {head_k[k], head_w ? head_w[k] : nullptr, head_b ? head_b[k] : nullptr};
      head_ptr[k] = &head_store[k];
    }
    heads = head_ptr;
  }
  Plan* plans = (Plan*)calloc((size_t)nl, sizeof(Plan));
  if (!plans) return 3;
  for (int l = 0; l < nl; ++l) plan_init(&plans[l], desc + l * DESC);
  int err = 0;
  if (n >= threads) {
    // Whole images per thread: no barrier between layers, planes stay in the thread's cache.
    // Images are handed out one at a time: a thread that wakes late (on a busy or virtual
    // machine that can take milliseconds) finds fewer left instead of delaying a fixed half.
#pragma omp parallel num_threads(threads)
    {
      Work own = {nullptr, nullptr, 0};
      Work* wk = thread_work(nslots, slot_floats, &own);
      if (!wk) {
#pragma omp atomic write
        err = 3;
      }
#pragma omp for schedule(dynamic, 1)
      for (int i = 0; i < n; ++i) {
        if (!wk) continue;
        image_in(wk, nin, in_io, ins, i);
        for (int l = 0; l < nl; ++l) {
          const int* d = desc + l * DESC;
          prepare_dst(wk, d);
          layer_tiles(&plans[l], d, wts[l], biases[l], wk->ws, slot_floats, 0,
                      layer_work(&plans[l], d));
        }
        image_out(wk, nout, out_io, heads, outs, i);
      }
      work_free(&own);
    }
  } else {
    // Fewer images than threads: one image at a time, each layer's tiles split across threads.
    Work own = {nullptr, nullptr, 0};
    Work* wk = thread_work(nslots, slot_floats, &own);
    if (!wk) err = 3;
    for (int i = 0; wk && i < n; ++i) {
      image_in(wk, nin, in_io, ins, i);
#pragma omp parallel num_threads(threads)
      for (int l = 0; l < nl; ++l) {
        const int* d = desc + l * DESC;
        const long work = layer_work(&plans[l], d);
#pragma omp single
        prepare_dst(wk, d);
#pragma omp for schedule(static)
        for (long j = 0; j < work; ++j)
          layer_tiles(&plans[l], d, wts[l], biases[l], wk->ws, slot_floats, j, j + 1);
      }
      image_out(wk, nout, out_io, heads, outs, i);
    }
    work_free(&own);
  }
  for (int l = 0; l < nl; ++l) {
    free(plans[l].vin);
    free(plans[l].vout);
    free(plans[l].vmask);
    free(plans[l].whole);
  }
  free(plans);
  return err;
}
}
"""


def kernel_source() -> str:
    """The complete C++ source of the kernel library."""
    head = "#include <alloca.h>\n#include <immintrin.h>\n#include <stdint.h>\n#include <stdlib.h>\n"
    head += "#include <string.h>\n"
    head += f"#define COB {COB}\n#define TILE_VECTORS {TILE_VECTORS}\n"
    tiles = "\n".join(_tile_source(*t) for t in TILES)
    tiles += "\n" + "\n".join(_tile_source(*t, fast=True) for t in TILES if t[1] == TILE_VECTORS)
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


def _check_private(path: Path) -> None:
    """Refuse to load a library that someone else could have written (code would run)."""
    if not hasattr(os, "getuid"):
        return
    for p in (path, path.parent):
        st = p.stat()
        if st.st_uid != os.getuid() or st.st_mode & 0o022:
            raise RuntimeError(
                f"refusing to load the direct conv kernel: {p} is not owned by this user or is "
                "writable by others (set TORCHSHRINK_CACHE_DIR to a private folder)"
            )


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
            _check_private(path)
            lib = ctypes.CDLL(str(path))
        except (RuntimeError, OSError) as exc:
            _ERROR = str(exc)
            raise RuntimeError(_ERROR) from exc
        ptr, i32 = ctypes.c_void_p, ctypes.c_int
        lib.ts_chain.argtypes = [i32, i32, ptr, ptr, ptr, i32, ptr, ptr, i32, ptr, ptr]
        lib.ts_chain.argtypes += [ptr, ptr, ptr, i32, ctypes.c_long, i32]  # heads, slots, threads
        lib.ts_chain.restype = i32
        lib.ts_pack_weights.argtypes = [ptr, i32, i32, i32, ptr]
        lib.ts_plane_floats.argtypes = [i32, i32]
        lib.ts_plane_floats.restype = ctypes.c_long
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


@dataclass
class ChainLayer:
    """One layer of a chain: ``dst = [relu](conv(src) [+ res])``.

    The convolution is 3x3 with padding 1 or 1x1 without padding, at stride 1 or 2.
    ``src``, ``res`` and ``dst`` are value slots (``res=-1``: no residual); a slot may be
    reused once its value is dead. ``weight`` is ``[Co, Ci, 3, 3]`` or ``[Co, Ci, 1, 1]``.
    """

    src: int
    res: int
    dst: int
    weight: torch.Tensor
    bias: torch.Tensor | None
    relu: bool
    stride: int = 1
    packed: torch.Tensor = field(init=False, repr=False)
    bias32: torch.Tensor | None = field(init=False, repr=False)

    def __post_init__(self) -> None:
        co, ci, kh, kw = (int(d) for d in self.weight.shape)
        if (kh, kw) not in ((3, 3), (1, 1)) or self.stride not in (1, 2):
            raise ValueError(
                f"ChainLayer: 3x3 or 1x1 kernels at stride 1 or 2 only, got {kh}x{kw} "
                f"stride {self.stride}"
            )
        w = self.weight.detach().to(torch.float32).contiguous()
        self.packed = torch.empty(-(-co // COB) * ci * self.taps * COB, dtype=torch.float32)
        _library().ts_pack_weights(w.data_ptr(), co, ci, self.taps, self.packed.data_ptr())
        b = self.bias
        self.bias32 = None if b is None else b.detach().to(torch.float32).contiguous()

    @property
    def taps(self) -> int:
        return int(self.weight.shape[2] * self.weight.shape[3])

    @property
    def in_channels(self) -> int:
        return int(self.weight.shape[1])

    @property
    def out_channels(self) -> int:
        return int(self.weight.shape[0])


Shape = tuple[int, int, int]  # channels, height, width


@dataclass
class ChainHead:
    """What the chain returns for an output instead of its planes: the per-channel mean over
    the height and width (global average pooling, ``(N, C)``), then, with ``weight``
    (``[K, C]``), the linear layer ``mean @ weight.T + bias`` (``(N, K)``).
    """

    weight: torch.Tensor | None = None
    bias: torch.Tensor | None = None

    def __post_init__(self) -> None:
        w, b = self.weight, self.bias
        if w is not None:
            w = self.weight = w.detach().to(torch.float32).contiguous()
            if w.dim() != 2 or (b is not None and tuple(b.shape) != (w.shape[0],)):
                got = (tuple(w.shape), None if b is None else tuple(b.shape))
                raise ValueError(f"ChainHead: weight [K, C] and bias [K] expected, got {got}")
        elif b is not None:
            raise ValueError("ChainHead: a bias needs a weight")
        if b is not None:
            self.bias = b.detach().to(torch.float32).contiguous()

    @property
    def rows(self) -> int:
        """The linear layer's outputs, 0 without one (the kernel's code for the means)."""
        return 0 if self.weight is None else int(self.weight.shape[0])

    def output(self, channels: int) -> tuple[int, ...]:
        """The per-image output shape for ``channels`` input channels."""
        return (self.rows or channels,)


def layer_output(
    src: Shape, in_channels: int, out_channels: int, stride: int, res: Shape | None
) -> tuple[Shape, str | None]:
    """A layer's output shape (PyTorch's, padding 1 for 3x3 and 0 for 1x1) and why the kernel
    cannot run it on ``src``, or ``None`` when it can.

    Example:
        >>> layer_output((8, 32, 32), 8, 16, 2, None)
        ((16, 16, 16), None)
        >>> layer_output((8, 7, 32), 8, 16, 2, None)[1]
        'stride 2 needs an even height and width, got 7x32'
    """
    c, h, w = src
    out = (out_channels, (h - 1) // stride + 1, (w - 1) // stride + 1)
    if c != in_channels:
        return out, f"the input holds {c} channels, not {in_channels}"
    if min(h, w) < 1:
        return out, f"empty input {h}x{w}"
    if stride == 2 and (h % 2 or w % 2):
        return out, f"stride 2 needs an even height and width, got {h}x{w}"
    if res is not None and res != out:
        return out, f"the residual is {res}, not {out}"
    return out, None


@dataclass
class PreparedChain:
    """A chain checked and laid out once for one set of input shapes; :meth:`run` runs it.

    Build it with :func:`prepare_chain`. Running it only checks that the tensors have the
    prepared shapes, then calls the kernel.
    """

    layers: list[ChainLayer]
    input_shapes: list[Shape]
    output_shapes: list[tuple[int, ...]]  # per image: (C, H, W), or a head's output
    _args: tuple[object, ...] = field(repr=False)  # the kernel's arguments that never change
    _heads: list[ChainHead] = field(default_factory=list, repr=False)  # keeps their tensors

    def run(self, values: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        """The output values for a batch of the prepared input shapes.

        Raises:
            ValueError: tensors of other shapes, dtypes, devices or batch sizes.
        """
        n = int(values[0].shape[0]) if values and values[0].dim() == 4 else -1
        if len(values) != len(self.input_shapes) or any(
            v.dim() != 4 or v.dtype != torch.float32 or v.device.type != "cpu"
            or v.shape[0] != n or tuple(v.shape[1:]) != shape
            for v, shape in zip(values, self.input_shapes, strict=False)
        ):  # fmt: skip
            got = [(str(v.dtype), tuple(v.shape), str(v.device)) for v in values]
            raise ValueError(
                f"run_chain: expected float32 CPU tensors of one batch size shaped "
                f"(N, C, H, W) with (C, H, W) {self.input_shapes}, got {got}"
            )
        ins = [v.contiguous() for v in values]
        outs = [torch.empty((n, *shape), dtype=torch.float32) for shape in self.output_shapes]
        vp = ctypes.c_void_p
        desc, wts, biases, in_io, out_io, head_k, head_w, head_b, n_slots, slot_floats = self._args
        rc = _library().ts_chain(
            n, len(self.layers), desc, wts, biases,
            len(ins), in_io, (vp * len(ins))(*[t.data_ptr() for t in ins]),
            len(outs), out_io, (vp * len(outs))(*[t.data_ptr() for t in outs]),
            head_k, head_w, head_b, n_slots, slot_floats, torch.get_num_threads(),
        )  # fmt: skip
        if rc != 0:
            raise RuntimeError(f"run_chain: the kernel failed (code {rc})")
        return outs


def prepare_chain(
    layers: Sequence[ChainLayer],
    input_shapes: Sequence[Shape],
    *,
    inputs: Sequence[int],
    outputs: Sequence[int],
    heads: Sequence[ChainHead | None] | None = None,
) -> PreparedChain:
    """Check ``layers`` against the inputs' ``(C, H, W)`` and lay out the kernel's arguments.

    Args:
        layers: the chain (each reads slots written by earlier layers or given as inputs).
        input_shapes: ``(C, H, W)`` of each input.
        inputs: the slot of each input.
        outputs: the slots to return, read at the end of the chain (so no later layer may
            overwrite an output's slot).
        heads: per output, ``None`` (its planes, ``(N, C, H, W)``) or a :class:`ChainHead`
            computed from them per image (at most 8 outputs then).

    Raises:
        ValueError: a layer the kernel cannot run on these shapes (which one and why).
        RuntimeError: the kernel is unavailable here (:func:`kernel_unavailable_reason`).
    """
    if len(input_shapes) != len(inputs) or not inputs:
        raise ValueError("run_chain: give one input shape per input slot")
    held: dict[int, Shape] = dict(zip(inputs, input_shapes, strict=True))
    every = list(input_shapes)  # every value's shape, to size the slots
    desc: list[int] = []
    for i, layer in enumerate(layers):
        src = held.get(layer.src)
        if src is None:
            raise ValueError(f"run_chain: layer {i}: slot {layer.src} holds no value")
        res = None if layer.res < 0 else held.get(layer.res)
        out, problem = layer_output(src, layer.in_channels, layer.out_channels, layer.stride, res)
        if problem is None and layer.res >= 0 and res is None:
            problem = f"residual slot {layer.res} holds no value"
        if problem is not None:
            raise ValueError(f"run_chain: layer {i}: {problem}")
        desc += [layer.src, layer.res, layer.dst, layer.in_channels, layer.out_channels]
        desc += [int(layer.relu), layer.taps, layer.stride, src[1], src[2], out[1], out[2]]
        held[layer.dst] = out
        every.append(out)
    heads = list(heads) if heads is not None else [None] * len(outputs)
    if len(heads) != len(outputs) or (any(heads) and len(outputs) > 8):
        raise ValueError("run_chain: give one head (or None) per output, at most 8 outputs")
    out_shapes: list[tuple[int, ...]] = []
    for s, head in zip(outputs, heads, strict=True):
        c = held[s][0]
        if head is not None and head.weight is not None and head.weight.shape[1] != c:
            raise ValueError(
                f"run_chain: the head's weight takes {int(head.weight.shape[1])} channels, "
                f"the value has {c}"
            )
        out_shapes.append(held[s] if head is None else head.output(c))
    # A slot holds the largest value ever put in it (padded planes, see the C driver), then
    # room for a row's last vector to read past the end; a whole number of 64-byte lines.
    lib = _library()
    slot_floats = -(-(max(c * lib.ts_plane_floats(h, w) for c, h, w in every) + 64) // 16) * 16
    vp, i32 = ctypes.c_void_p, ctypes.c_int
    in_io = [x for s, shape in zip(inputs, input_shapes, strict=True) for x in (s, *shape)]
    out_io = [x for s in outputs for x in (s, *held[s])]
    head_args: tuple[object, object, object] = (None, None, None)
    if any(h is not None for h in heads):
        # -1: the planes; 0: the channel means; K: a linear layer of K rows after them.
        ks = [-1 if h is None else h.rows for h in heads]
        ws = [0 if h is None or h.weight is None else h.weight.data_ptr() for h in heads]
        bs = [0 if h is None or h.bias is None else h.bias.data_ptr() for h in heads]
        n = len(heads)
        head_args = ((i32 * n)(*ks), (vp * n)(*ws), (vp * n)(*bs))
    args = (
        (i32 * len(desc))(*desc),
        (vp * len(layers))(*[layer.packed.data_ptr() for layer in layers]),
        (vp * len(layers))(*[0 if b is None else b.data_ptr() for b in (x.bias32 for x in layers)]),
        (i32 * len(in_io))(*in_io),
        (i32 * len(out_io))(*out_io),
        *head_args,
        1 + max([*inputs, *(layer.dst for layer in layers)]),
        slot_floats,
    )
    shapes = [(int(c), int(h), int(w)) for c, h, w in input_shapes]
    return PreparedChain(list(layers), shapes, out_shapes, args, [h for h in heads if h])


def run_chain(
    layers: Sequence[ChainLayer],
    values: Sequence[torch.Tensor],
    *,
    inputs: Sequence[int],
    outputs: Sequence[int],
    heads: Sequence[ChainHead | None] | None = None,
) -> list[torch.Tensor]:
    """Run ``layers`` in order on a batch; returns the values of the ``outputs`` slots.

    :func:`prepare_chain` then :meth:`PreparedChain.run`; prepare once to run a chain often.

    Args:
        layers: the chain (each reads slots written by earlier layers or given as inputs).
        values: the input tensors, ``[N, C_k, H_k, W_k]`` float32 on the CPU, one per
            ``inputs``.
        inputs: the slot of each input.
        outputs: the slots to return, read at the end of the chain.
        heads: per output, ``None`` or a :class:`ChainHead` (see :func:`prepare_chain`).

    Raises:
        ValueError: inputs the kernel does not take (which layer and why).
        RuntimeError: the kernel is unavailable here (:func:`kernel_unavailable_reason`).
    """
    shapes = [(int(v.shape[1]), int(v.shape[2]), int(v.shape[3])) if v.dim() == 4 else (0, 0, 0)
              for v in values]  # fmt: skip
    prepared = prepare_chain(layers, shapes, inputs=inputs, outputs=outputs, heads=heads)
    return prepared.run(values)
