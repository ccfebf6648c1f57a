/* C kernels for the MUSE forward pass on CPU (torch_bridge/native/__init__.py says why).
 *
 * Every map is one batch item, float32, channels-last: element (y, x, c) of an (H, W, C) map
 * is at [(y * W + x) * C + c]. Sizes are ints; no function allocates more than O(W * C)
 * scratch. Compiled with -std=c11 (no floating-point contraction), so each expression
 * rounds as written.
 */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define TAPS 9

/* Depthwise deformable 3x3 convolution (deform_conv2d v1, one offset group, stride 1,
 * padding 1), the convention of torchvision's deform_conv2d as in deform.py:
 *   tap k = 3 i + j samples x at (y - 1 + i + dy_k, x - 1 + j + dx_k), dy_k = off[.., 2k],
 *   dx_k = off[.., 2k + 1], bilinearly from the four integer neighbours (outside: zero);
 *   out[y, x, c] = sum_k weight[c, k] * sample_k[c].
 * As the torch "grid_cl" formulation: the position is rounded once in float32 (as torchvision
 * computes it), the interpolation weights and values are float64, the four corners are summed
 * in the order nw, ne, sw, se (torch's grid_sample), the taps are accumulated in float64 in
 * tap order and the result is rounded once to float32.
 *   x      (H, W, C)     input map
 *   off    (H, W, 18)    offsets, channels-last
 *   weight (C, 9)        depthwise kernel
 *   out    (H, W, C)
 */
/* One output pixel (y, xx) of deform_dw3x3: o points at its 18 offsets, kd at the kernel as
 * kd[k * C + c] = weight[c, k] in float64, dst at its C outputs. */
static inline __attribute__((always_inline)) void deform_px(const float *x, const float *o, const double *kd,
                                                            float *dst, int H, int W, const int C, int y, int xx)
{
    double acc[64], s[64];  /* C <= 64 (deform_dw3x3 checks) */
    for (int k = 0; k < TAPS; k++) {
        const float py = (float)(y + k / 3 - 1) + o[2 * k];
        const float px = (float)(xx + k % 3 - 1) + o[2 * k + 1];
        const double iy = py, ix = px;
        const double fy = floor(iy), fx = floor(ix);
        const int y0 = (int)fy, x0 = (int)fx;
        /* grid_sample's weights: nw = (x_se - x)(y_se - y), ne = (x - x_sw)(y_sw - y),
         * sw = (x_ne - x)(y - y_ne), se = (x - x_nw)(y - y_nw). */
        const double dx1 = (fx + 1.0) - ix, dx0 = ix - fx;
        const double dy1 = (fy + 1.0) - iy, dy0 = iy - fy;
        double wgt[4] = {dx1 * dy1, dx0 * dy1, dx1 * dy0, dx0 * dy0};
        const int cy[4] = {y0, y0, y0 + 1, y0 + 1}, cx[4] = {x0, x0 + 1, x0, x0 + 1};
        const float *v[4];
        for (int q = 0; q < 4; q++) {
            const int inside = cy[q] >= 0 && cy[q] < H && cx[q] >= 0 && cx[q] < W;
            if (!inside) wgt[q] = 0.0;  /* adds an exact +0 in place of the term */
            const int qy = cy[q] < 0 ? 0 : (cy[q] >= H ? H - 1 : cy[q]);
            const int qx = cx[q] < 0 ? 0 : (cx[q] >= W ? W - 1 : cx[q]);
            v[q] = x + ((size_t)qy * W + qx) * C;
        }
        const double *kk = kd + k * C;
        if (k == 0) {
            for (int c = 0; c < C; c++) {
                s[c] = (double)v[0][c] * wgt[0] + (double)v[1][c] * wgt[1] + (double)v[2][c] * wgt[2]
                       + (double)v[3][c] * wgt[3];
                acc[c] = s[c] * kk[c];
            }
        } else {
            for (int c = 0; c < C; c++) {
                s[c] = (double)v[0][c] * wgt[0] + (double)v[1][c] * wgt[1] + (double)v[2][c] * wgt[2]
                       + (double)v[3][c] * wgt[3];
                acc[c] = acc[c] + s[c] * kk[c];
            }
        }
    }
    for (int c = 0; c < C; c++)
        dst[c] = (float)acc[c];
}

/* deform_px with MUSE's channel counts as constants, callable from code compiled with other
 * options (the fused embedding below): not inlined there, so this arithmetic stays uncontracted. */
static __attribute__((noinline)) void deform_px_c(const float *x, const float *o, const double *kd, float *dst, int H,
                                                  int W, int C, int y, int xx)
{
    if (C == 16)
        deform_px(x, o, kd, dst, H, W, 16, y, xx);
    else if (C == 32)
        deform_px(x, o, kd, dst, H, W, 32, y, xx);
    else if (C == 48)
        deform_px(x, o, kd, dst, H, W, 48, y, xx);
    else
        deform_px(x, o, kd, dst, H, W, C, y, xx);
}

static inline __attribute__((always_inline)) void deform_rows(const float *x, const float *off, const float *weight,
                                                              float *out, int H, int W, const int C)
{
    double *kd = malloc(sizeof(double) * TAPS * C);  /* kd[k * C + c] = weight[c, k] */
    for (int c = 0; c < C; c++)
        for (int k = 0; k < TAPS; k++)
            kd[k * C + c] = (double)weight[c * TAPS + k];
    for (int y = 0; y < H; y++)
        for (int xx = 0; xx < W; xx++)
            deform_px(x, off + ((size_t)y * W + xx) * (2 * TAPS), kd, out + ((size_t)y * W + xx) * C, H, W, C, y, xx);
    free(kd);
}

void deform_dw3x3(const float *x, const float *off, const float *weight, float *out, int H, int W, int C)
{
    if (C > 64) return;  /* the Python caller sends at most 64 channels */
    /* MUSE's channel counts as compile-time constants (the channel loops unroll), then any C */
    if (C == 16)
        deform_rows(x, off, weight, out, H, W, 16);
    else if (C == 32)
        deform_rows(x, off, weight, out, H, W, 32);
    else if (C == 48)
        deform_rows(x, off, weight, out, H, W, 48);
    else
        deform_rows(x, off, weight, out, H, W, C);
}

/* ------------------------------------------------------------------------------------------
 * The gated feed-forward network of a MUSE transformer block, fused (model.GatedFFN):
 *   a = dw3x3_a(W_a x), b = dw3x3_b(W_b x)     (1x1 convs C -> M each, then depthwise 3x3,
 *                                               zero padding 1, no biases)
 *   out = W_out (gelu(a) * b)                  (1x1 conv M -> C)
 * One pass over the rows: the 1x1 outputs of rows y-1, y, y+1 live in a ring of three
 * zero-padded rows (3 x (W + 2) x 2MP floats, ~150 kB at MUSE's first level), so the 2M-channel
 * intermediates are never written to memory. MP is M rounded up to 16 (padded channels have
 * zero weights); C must be a multiple of 16 up to 48 and M at most 128 (MUSE: C = 16, 32, 48
 * with M = 42, 85, 127; else it returns -1). Products are fused multiply-adds in a fixed order:
 * k = 0..C-1 for the 1x1 in, taps row-major for the depthwise conv; for the 1x1 out, four
 * partial sums over j = 4i + q, added as (s0 + s1) + (s2 + s3). Two pixels are computed per
 * step where their accumulators fit the registers (C <= 32), sharing the weight loads.
 *   x     (H, W, C)       input (the block's norm2 output)
 *   w_in  (2M, C)         project_in weight (rows 0..M-1 give a, M..2M-1 give b)
 *   w_dw  (2M, 9)         depthwise weight
 *   w_out (C, M)          project_out weight
 *   out   (H, W, C)
 * ------------------------------------------------------------------------------------------ */
/* GELU(x) = x Phi(x), Phi the standard normal CDF (torch's gelu, approximate="none"), in float32
 * arithmetic that the compiler vectorises: no division, one exp, no table, no branch, no libm
 * call (fmaf is one instruction with -march=native). With t = |x| <= 5.5,
 *   Q(t) = Phi(-t) = 0.5 exp(-t^2/2 + t M(t)),  M(t) = (log(0.5 erfcx(t / sqrt2)) + ln 2) / t,
 * M a degree-10 polynomial in t fitted here (weighted near-minimax, float32-rounded
 * coefficients; fit error of t M 6.7e-9 for t < 3.6); -t^2/2 is split exactly with fma; exp is
 * a reduction by ln 2 (magic-number rounding, ln 2 in two parts), 1 + r + r^2 q(r) with a
 * degree-4 q, and 2^(n-1) built from the exponent bits. gelu = fma(-t, Q, xp) with
 * xp = (x <= 0 ? -0 : x): x Q for x <= 0, x - x Q for x > 0, so the negative tail keeps its
 * relative accuracy. |x| > 5.5 gives xp (the true |gelu - xp| < 1.1e-7); NaN gives NaN.
 * Against float64 x Phi(x) on 27.6M float32 points in [-10, 10]: max 2.4e-7 absolute (the final
 * rounding), 3.6 ulp where |gelu| >= 1e-3, 1.34 ulp for x > 0 (torch's float32 gelu: 1.3e-6
 * absolute, 5.5 ulp for x > 0); 0.56 ns per value in a gelu(a) * b loop, as torch's gelu_.
 * tests/torch_bridge/test_native.py checks it against scipy's erfc. */
static inline uint32_t gelu_f2u_(float f) { uint32_t u; memcpy(&u, &f, 4); return u; }
static inline float gelu_u2f_(uint32_t u) { float f; memcpy(&f, &u, 4); return f; }

static inline float gelu_erf(float x)
{
    const float T = 5.5f;
    float t = fabsf(x);

    /* p = M(t):  Q(t) = Phi(-t) = 0.5*exp(-t^2/2 + t*M(t)) */
    float z = t;
    float p = 2.322338766e-09f;
    p = fmaf(p, z, -8.159040021e-08f);
    p = fmaf(p, z, 1.280763854e-06f);
    p = fmaf(p, z, -1.175634316e-05f);
    p = fmaf(p, z, 6.790012412e-05f);
    p = fmaf(p, z, -2.260596229e-04f);
    p = fmaf(p, z, 4.083431850e-05f);
    p = fmaf(p, z, 4.787184298e-03f);
    p = fmaf(p, z, -3.634099662e-02f);
    p = fmaf(p, z, 1.816919893e-01f);
    p = fmaf(p, z, -7.978847623e-01f);
    /* -t^2/2 = hh + ll exactly */
    float nt = -0.5f * t;
    float hh = nt * t;
    float ll = fmaf(nt, t, -hh);

    const float MAGIC = 12582912.0f;         /* 1.5*2^23: round to nearest integer */
    float kf = fmaf(fmaf(t, p, hh), 1.442695041e+00f, MAGIC);
    float nf = kf - MAGIC;
    float rh = fmaf(nf, -6.931471825e-01f, hh);
    float r  = fmaf(t, p, rh);               /* |r| <~ ln2/2 */
    float sm = fmaf(nf, 1.904654212e-09f, ll);   /* -n*(ln2 - (float)ln2) - (t^2 rounding)/2 */
    float q = 1.382045564e-03f;
    q = fmaf(q, r, 8.369248360e-03f);
    q = fmaf(q, r, 4.166828468e-02f);
    q = fmaf(q, r, 1.666651666e-01f);
    q = fmaf(q, r, 4.999999404e-01f);
    float s = r + fmaf(r * r, q, sm);        /* exp(r + sm) - 1 */
    uint32_t kb = gelu_f2u_(kf);
    float scale = gelu_u2f_((kb + (uint32_t)(126 - 0x4B400000)) << 23);  /* 2^(n-1) */
    float Q = fmaf(scale, s, scale);         /* Phi(-|x|) */

    float xp = x <= 0.0f ? -0.0f : x;        /* NaN -> NaN */
    float res = fmaf(-t, Q, xp);             /* x<=0: x*Q;  x>0: x - x*Q */
    return t > T ? xp : res;                 /* |x| > T: gelu = max(x, -0) to < 1.1e-7 (NaN: res) */
}


/* out[i] = gelu(x[i]) (tests and benches check gelu_erf through this). */
void gelu_array(const float *x, float *out, int n)
{
    for (int i = 0; i < n; i++) out[i] = gelu_erf(x[i]);
}

/* 16 floats: one AVX-512 register (two AVX ones elsewhere). Unaligned loads and stores go
 * through memcpy, which the compiler turns into single vector moves. */
typedef float v16 __attribute__((vector_size(64)));

static inline v16 ld16(const float *p)
{
    v16 v;
    memcpy(&v, p, sizeof v);
    return v;
}

static inline void st16(float *p, v16 v) { memcpy(p, &v, sizeof v); }

static inline v16 splat16(float f) { return (v16){f, f, f, f, f, f, f, f, f, f, f, f, f, f, f, f}; }

/* Fused multiply-add (contracted: this section is compiled with fp-contract=fast). */
#pragma GCC push_options
#pragma GCC optimize("fp-contract=fast")
static inline v16 fma16(v16 a, v16 b, v16 c) { return a * b + c; }

typedef int v16i __attribute__((vector_size(64)));

static inline float hsum16(v16 v)
{
    /* the halving tree ((v0 + v8) + (v4 + v12)) + ... in registers: lane 0 after four
     * rotate-and-add steps */
    v = v + __builtin_shuffle(v, (v16i){8, 9, 10, 11, 12, 13, 14, 15, 0, 1, 2, 3, 4, 5, 6, 7});
    v = v + __builtin_shuffle(v, (v16i){4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 0, 1, 2, 3});
    v = v + __builtin_shuffle(v, (v16i){2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 0, 1});
    v = v + __builtin_shuffle(v, (v16i){1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 0});
    return v[0];
}

static inline v16 gelu16(v16 v)
{
    float t[16];
    st16(t, v);
    for (int l = 0; l < 16; l++) t[l] = gelu_erf(t[l]);
    return ld16(t);
}

/* NB = C / 16 and NS = 2 MP / 16 vectors per pixel; both compile-time constants in the
 * specialised calls below, so the accumulators stay in registers. */
/* The bias-free LayerNorm of one pixel of C = 16 NB channels into xn (model.BiasFreeLayerNormBody):
 * mean and variance (two-pass) over the channels, then x * (1 / sqrt(var + 1e-5) * w). */
static inline __attribute__((always_inline)) void layer_norm_px(const float *restrict src, const float *restrict w,
                                                                float *restrict xn, const int NB)
{
    const float inv_c = 1.0f / (float)(16 * NB);
    v16 sum = ld16(src);
    for (int b = 1; b < NB; b++) sum = sum + ld16(src + 16 * b);
    const v16 mean = splat16(hsum16(sum) * inv_c);
    v16 sq = splat16(0.0f);
    for (int b = 0; b < NB; b++) {
        const v16 dv = ld16(src + 16 * b) - mean;
        sq = fma16(dv, dv, sq);
    }
    const v16 scale = splat16(1.0f / sqrtf(hsum16(sq) * inv_c + 1e-5f));
    for (int b = 0; b < NB; b++) st16(xn + 16 * b, ld16(src + 16 * b) * (scale * ld16(w + 16 * b)));
}

/* With BLOCK = 1 (ffn_block), the input is first normalised per pixel by the bias-free
 * LayerNorm (norm2: x / sqrt(var_C(x) + 1e-5) * ln_w, mean kept in the numerator) and the
 * output is the residual x + ffn(LN(x)). out may be x itself: input row y is last read (its
 * residual) just before output row y is written. */
/* P consecutive pixels at src (pixel stride C) -> their 1x1 outputs at dst (pixel stride S);
 * the weight vectors are loaded once for the P pixels. */
static inline __attribute__((always_inline)) void ffn_in_px(const float *src, const float *restrict ln_w,
                                                            const float *restrict w_in_t, float *restrict dst,
                                                            const int NB, const int NS, const int BLOCK,
                                                            const int P)
{
    const int C = 16 * NB, S = 16 * NS;
    float xn[2][16 * 3];
    const float *xin[2];
    for (int p = 0; p < P; p++) {
        if (BLOCK) layer_norm_px(src + p * C, ln_w, xn[p], NB);
        xin[p] = BLOCK ? xn[p] : src + p * C;
    }
    v16 acc[2][16];
    for (int p = 0; p < P; p++)
        for (int o = 0; o < NS; o++) acc[p][o] = splat16(0.0f);
    for (int k = 0; k < C; k++) {
        v16 xv[2];
        for (int p = 0; p < P; p++) xv[p] = splat16(xin[p][k]);
        for (int o = 0; o < NS; o++) {
            const v16 w = ld16(w_in_t + (size_t)k * S + 16 * o);
            for (int p = 0; p < P; p++) acc[p][o] = fma16(xv[p], w, acc[p][o]);
        }
    }
    for (int p = 0; p < P; p++)
        for (int o = 0; o < NS; o++) st16(dst + (size_t)p * S + 16 * o, acc[p][o]);
}

/* Output pixels px .. px + P - 1 of row y: depthwise 3x3 on the ring rows, gelu(a) * b, the
 * 1x1 out (four partial sums), the residual when BLOCK. */
static inline __attribute__((always_inline)) void ffn_out_px(const float *const *rows3, const float *x,
                                                             const float *restrict w_dw_t,
                                                             const float *restrict w_out_t, float *dst,
                                                             float *restrict u, float *restrict d, int y, int px,
                                                             int W, const int NB, const int NS, const int BLOCK,
                                                             const int P)
{
    const int C = 16 * NB, S = 16 * NS, MP = S / 2;
    v16 acc[2][16];
    for (int p = 0; p < P; p++)
        for (int o = 0; o < NS; o++) acc[p][o] = splat16(0.0f);
    for (int t = 0; t < 9; t++) {
        /* ring pixel px + j holds map column px + j - 1 */
        const float *src = rows3[t / 3] + (size_t)(px + t % 3) * S;
        for (int o = 0; o < NS; o++) {
            const v16 w = ld16(w_dw_t + (size_t)t * S + 16 * o);
            for (int p = 0; p < P; p++) acc[p][o] = fma16(ld16(src + (size_t)p * S + 16 * o), w, acc[p][o]);
        }
    }
    for (int p = 0; p < P; p++) {
        for (int o = 0; o < NS; o++) st16(d + 16 * o, acc[p][o]);
        for (int j = 0; j < MP; j++) u[p * MP + j] = gelu_erf(d[j]) * d[MP + j];
    }
    v16 oacc[2][4][3];
    for (int p = 0; p < P; p++)
        for (int q = 0; q < 4; q++)
            for (int c = 0; c < NB; c++) oacc[p][q][c] = splat16(0.0f);
    for (int j = 0; j < MP; j += 4)
        for (int q = 0; q < 4; q++)
            for (int c = 0; c < NB; c++) {
                const v16 w = ld16(w_out_t + (size_t)(j + q) * C + 16 * c);
                for (int p = 0; p < P; p++) oacc[p][q][c] = fma16(splat16(u[p * MP + j + q]), w, oacc[p][q][c]);
            }
    for (int p = 0; p < P; p++)
        for (int c = 0; c < NB; c++) {
            const v16 f = (oacc[p][0][c] + oacc[p][1][c]) + (oacc[p][2][c] + oacc[p][3][c]);
            float *o = dst + (size_t)p * C + 16 * c;
            st16(o, BLOCK ? ld16(x + ((size_t)y * W + px + p) * C + 16 * c) + f : f);
        }
}

static inline __attribute__((always_inline)) void ffn_rows(
    const float *x, const float *restrict ln_w, const float *restrict w_in_t, const float *restrict w_dw_t,
    const float *restrict w_out_t, float *out, float *restrict ring, const float *restrict zero_row,
    float *restrict u, float *restrict d, const int H, const int W, const int NB, const int NS, const int BLOCK)
{
    /* two pixels at a time where their accumulators fit the 32 vector registers (level 1) */
    const int C = 16 * NB, S = 16 * NS, P = NS <= 12 ? 2 : 1;
    const size_t row = (size_t)(W + 2) * S;
    for (int y = -1; y < H; y++) {
        /* the 1x1 outputs of input row y + 1 into ring slot (y + 1) % 3 (pixels 1..W) */
        if (y + 1 < H) {
            float *dst = ring + (size_t)((y + 1) % 3) * row + S;
            const float *src = x + (size_t)(y + 1) * W * C;
            int px = 0;
            for (; px + P <= W; px += P) ffn_in_px(src + (size_t)px * C, ln_w, w_in_t, dst + (size_t)px * S, NB, NS, BLOCK, P);
            for (; px < W; px++) ffn_in_px(src + (size_t)px * C, ln_w, w_in_t, dst + (size_t)px * S, NB, NS, BLOCK, 1);
        }
        if (y < 0) continue;
        const float *rows3[3] = {y >= 1 ? ring + (size_t)((y - 1) % 3) * row : zero_row,
                                 ring + (size_t)(y % 3) * row,
                                 y + 1 < H ? ring + (size_t)((y + 1) % 3) * row : zero_row};
        float *dst = out + (size_t)y * W * C;
        int px = 0;
        for (; px + P <= W; px += P)
            ffn_out_px(rows3, x, w_dw_t, w_out_t, dst + (size_t)px * C, u, d, y, px, W, NB, NS, BLOCK, P);
        for (; px < W; px++)
            ffn_out_px(rows3, x, w_dw_t, w_out_t, dst + (size_t)px * C, u, d, y, px, W, NB, NS, BLOCK, 1);
    }
}

static void ffn_any(const float *x, const float *ln_w, const float *w_in, const float *w_dw, const float *w_out, float *out,
                    int H, int W, int C, int M)
{
    const int MP = (M + 15) / 16 * 16, S = 2 * MP;
    /* transposed, padded weights: w_in_t[k][o], w_dw_t[t][o], w_out_t[j][c] (zeros in the pads) */
    float *w_in_t = calloc((size_t)C * S, sizeof(float));
    float *w_dw_t = calloc((size_t)9 * S, sizeof(float));
    float *w_out_t = calloc((size_t)MP * C, sizeof(float));
    float *ring = calloc((size_t)3 * (W + 2) * S, sizeof(float));
    float *zero_row = calloc((size_t)(W + 2) * S, sizeof(float));
    float *u = calloc((size_t)2 * MP, sizeof(float));
    float *d = calloc((size_t)S, sizeof(float));
    for (int h = 0; h < 2; h++)
        for (int m = 0; m < M; m++) {
            const int o = h * MP + m, src = h * M + m;
            for (int k = 0; k < C; k++) w_in_t[(size_t)k * S + o] = w_in[(size_t)src * C + k];
            for (int t = 0; t < 9; t++) w_dw_t[(size_t)t * S + o] = w_dw[(size_t)src * 9 + t];
        }
    for (int c = 0; c < C; c++)
        for (int m = 0; m < M; m++) w_out_t[(size_t)m * C + c] = w_out[(size_t)c * M + m];
    /* the sizes of MUSE's three levels as compile-time constants, then any C multiple of 16 */
#define FFN_CALL(NB_, NS_)                                                                               \
    do {                                                                                                 \
        if (ln_w)                                                                                        \
            ffn_rows(x, ln_w, w_in_t, w_dw_t, w_out_t, out, ring, zero_row, u, d, H, W, NB_, NS_, 1);    \
        else                                                                                             \
            ffn_rows(x, NULL, w_in_t, w_dw_t, w_out_t, out, ring, zero_row, u, d, H, W, NB_, NS_, 0);    \
    } while (0)
    if (C == 16 && MP == 48)
        FFN_CALL(1, 6);
    else if (C == 32 && MP == 96)
        FFN_CALL(2, 12);
    else if (C == 48 && MP == 128)
        FFN_CALL(3, 16);
    else
        FFN_CALL(C / 16, S / 16);
#undef FFN_CALL
    free(w_in_t);
    free(w_dw_t);
    free(w_out_t);
    free(ring);
    free(zero_row);
    free(u);
    free(d);
}

int gated_ffn(const float *x, const float *w_in, const float *w_dw, const float *w_out, float *out, int H, int W,
              int C, int M)
{
    if (C % 16 || C > 48 || M < 1 || M > 128) return -1;  /* the register blocks hold up to 48 and 128 channels */
    ffn_any(x, NULL, w_in, w_dw, w_out, out, H, W, C, M);
    return 0;
}

/* x + ffn(norm2(x)), the second half of a transformer block; out may be x (in place). */
int ffn_block(const float *x, const float *ln_w, const float *w_in, const float *w_dw, const float *w_out, float *out,
              int H, int W, int C, int M)
{
    if (C % 16 || C > 48 || M < 1 || M > 128) return -1;  /* the register blocks hold up to 48 and 128 channels */
    ffn_any(x, ln_w, w_in, w_dw, w_out, out, H, W, C, M);
    return 0;
}


/* ------------------------------------------------------------------------------------------
 * The gated Taylor attention of a MUSE transformer block with heads of d = 16 channels
 * (model.TaylorAttention at the first level, C = 16, one head, and the second, C = 32, two
 * heads; returns -1 for other head counts), fused in two passes over the rows:
 *   pass 1: qkv = dw3x3(W_qkv u) (1x1 C -> 3C, depthwise 3x3); per head q^ = q / (|q| + 1e-6)
 *           and k^ likewise; [q^, k^] of each head are kept in a zero-bordered
 *           (H + 2, W + 2, 2C) scratch map; the global sums K^T V (16 x 16 per head), sum k^,
 *           sum v and sum u are accumulated per row in float32 and across rows in float64
 *           (rounded once to float32);
 *   pass 2: s = W_sca mean(u) + b_sca; g = the gate (1x1 C -> 2C, then the grouped 3x3 conv
 *           with two inputs per output, as a depthwise conv on both and their sum); per head
 *           r = sigmoid(conv3x3([q^, k^]) + b_ref), num = sum v + q^ (K^T V),
 *           den = q^ . sum k^ + (N + 1e-6); o = num * (temperature * r / den) * s * gelu(g);
 *           out = W_proj o.
 *   u       (H, W, C)         input (the block's norm1 output), C = 16 heads
 *   w_sca   (C, C), b_sca (C)
 *   w_gpw   (2C, C)           gate 1x1 weight (dwconv.0); w_gdw (C, 2, 9) its grouped 3x3
 *   w_qkv   (3C, C)           qkv 1x1 weight; w_qdw (3C, 9) its depthwise 3x3
 *   w_ref   (heads, 32, 9), b_ref (heads): refine conv, head h reads [q^_h, k^_h]
 *   temp    (heads)           temperature
 *   w_proj  (C, C)            project_out weight
 *   res     (H, W, C) or NULL  when given, out = res + attention (the block's residual)
 *   scratch (H + 2) * (W + 2) * 2C floats
 *   out     (H, W, C)
 * ------------------------------------------------------------------------------------------ */
#define MAX_HEADS 2

/* dst[px][o] = sum_k w_t[k][o] src[px][k] for 16 NI input and 16 NS output channels (pixel
 * stride of dst 16 NS); k in order, one fused multiply-add each. */
static inline __attribute__((always_inline)) void pw_row(const float *restrict src, const float *restrict w_t,
                                                         float *restrict dst, int W, const int NI, const int NS)
{
    const int S = 16 * NS, CI = 16 * NI;
    for (int px = 0; px < W; px++, dst += S, src += CI) {
        v16 acc[3 * MAX_HEADS];
        for (int o = 0; o < NS; o++) acc[o] = splat16(0.0f);
        for (int k = 0; k < CI; k++) {
            const v16 xv = splat16(src[k]);
            for (int o = 0; o < NS; o++) acc[o] = fma16(xv, ld16(w_t + (size_t)k * S + 16 * o), acc[o]);
        }
        for (int o = 0; o < NS; o++) st16(dst + 16 * o, acc[o]);
    }
}

static inline __attribute__((always_inline)) void attention_rows(
    const float *u, const float *w_sca, const float *b_sca, const float *w_gpw, const float *w_gdw,
    const float *w_qkv, const float *w_qdw, const float *w_ref, const float *b_ref, const float *temp,
    const float *w_proj, const float *res, float *scratch, float *out, int H, int W, const int NH)
{
    const int C = 16 * NH, S2 = 2 * C, S3 = 3 * C;
    const size_t qrow = (size_t)(W + 2) * S2;  /* scratch row stride */
    /* transposed weights, [input or tap][output] */
    float *w_qkv_t = malloc(sizeof(float) * C * S3), *w_qdw_t = malloc(sizeof(float) * 9 * S3);
    float *w_gpw_t = malloc(sizeof(float) * C * S2), *w_gdw_t = malloc(sizeof(float) * 9 * S2);
    float *w_ref_t = malloc(sizeof(float) * 9 * S2), *w_proj_t = malloc(sizeof(float) * C * C);
    for (int o = 0; o < S3; o++) {
        for (int k = 0; k < C; k++) w_qkv_t[k * S3 + o] = w_qkv[o * C + k];
        for (int t = 0; t < 9; t++) w_qdw_t[t * S3 + o] = w_qdw[o * 9 + t];
    }
    /* gate: ring channel h C + c holds the 1x1 output 2c + h (the grouped conv's inputs) */
    for (int c = 0; c < C; c++)
        for (int h = 0; h < 2; h++) {
            for (int k = 0; k < C; k++) w_gpw_t[k * S2 + h * C + c] = w_gpw[(2 * c + h) * C + k];
            for (int t = 0; t < 9; t++) w_gdw_t[t * S2 + h * C + c] = w_gdw[(c * 2 + h) * 9 + t];
        }
    for (int ch = 0; ch < S2; ch++)  /* head h's 32 refine inputs are scratch channels 32h.. */
        for (int t = 0; t < 9; t++) w_ref_t[t * S2 + ch] = w_ref[ch * 9 + t];
    for (int o = 0; o < C; o++)
        for (int k = 0; k < C; k++) w_proj_t[k * C + o] = w_proj[o * C + k];

    const size_t ring_row = (size_t)(W + 2) * S3;
    float *ring = calloc(3 * ring_row, sizeof(float));
    float *zero_row = calloc(ring_row, sizeof(float));
    memset(scratch, 0, sizeof(float) * qrow);                            /* top border row */
    memset(scratch + (size_t)(H + 1) * qrow, 0, sizeof(float) * qrow);  /* bottom border row */

    /* ---- pass 1 ---- */
    double kv_d[MAX_HEADS][16][16] = {{{0}}}, ks_d[16 * MAX_HEADS] = {0}, vs_d[16 * MAX_HEADS] = {0},
           us_d[16 * MAX_HEADS] = {0};
    for (int y = -1; y < H; y++) {
        if (y + 1 < H)
            pw_row(u + (size_t)(y + 1) * W * C, w_qkv_t, ring + (size_t)((y + 1) % 3) * ring_row + S3, W, NH, 3 * NH);
        if (y < 0) continue;
        const float *rows3[3] = {y >= 1 ? ring + (size_t)((y - 1) % 3) * ring_row : zero_row,
                                 ring + (size_t)(y % 3) * ring_row,
                                 y + 1 < H ? ring + (size_t)((y + 1) % 3) * ring_row : zero_row};
        float *qk = scratch + (size_t)(y + 1) * qrow;
        memset(qk, 0, sizeof(float) * S2);                          /* left border */
        memset(qk + (size_t)(W + 1) * S2, 0, sizeof(float) * S2);  /* right border */
        qk += S2;
        v16 kv_r[MAX_HEADS][16], ks_r[MAX_HEADS], vs_r[MAX_HEADS], us_r[MAX_HEADS];
        for (int h = 0; h < NH; h++) {
            ks_r[h] = vs_r[h] = us_r[h] = splat16(0.0f);
            for (int i = 0; i < 16; i++) kv_r[h][i] = splat16(0.0f);
        }
        const float *urow = u + (size_t)y * W * C;
        for (int px = 0; px < W; px++, qk += S2) {
            v16 a[3 * MAX_HEADS];
            for (int o = 0; o < 3 * NH; o++) a[o] = splat16(0.0f);
            for (int t = 0; t < 9; t++) {
                const float *src = rows3[t / 3] + (size_t)(px + t % 3) * S3;
                for (int o = 0; o < 3 * NH; o++)
                    a[o] = fma16(ld16(src + 16 * o), ld16(w_qdw_t + t * S3 + 16 * o), a[o]);
            }
            for (int h = 0; h < NH; h++) {
                const v16 q = a[h], k = a[NH + h], v = a[2 * NH + h];
                const v16 qn = q / splat16(sqrtf(hsum16(q * q)) + 1e-6f);
                const v16 kn = k / splat16(sqrtf(hsum16(k * k)) + 1e-6f);
                st16(qk + 32 * h, qn);
                st16(qk + 32 * h + 16, kn);
                float kt[16];
                st16(kt, kn);
                for (int i = 0; i < 16; i++) kv_r[h][i] = fma16(splat16(kt[i]), v, kv_r[h][i]);
                ks_r[h] = ks_r[h] + kn;
                vs_r[h] = vs_r[h] + v;
                us_r[h] = us_r[h] + ld16(urow + (size_t)px * C + 16 * h);
            }
        }
        float t[16];
        for (int h = 0; h < NH; h++) {
            for (int i = 0; i < 16; i++) {
                st16(t, kv_r[h][i]);
                for (int j = 0; j < 16; j++) kv_d[h][i][j] += t[j];
            }
            st16(t, ks_r[h]);
            for (int j = 0; j < 16; j++) ks_d[16 * h + j] += t[j];
            st16(t, vs_r[h]);
            for (int j = 0; j < 16; j++) vs_d[16 * h + j] += t[j];
            st16(t, us_r[h]);
            for (int j = 0; j < 16; j++) us_d[16 * h + j] += t[j];
        }
    }

    /* ---- between the passes: the global terms in float32 ---- */
    const int N = H * W;
    float kv[MAX_HEADS][16][16], ks[16 * MAX_HEADS], vs[16 * MAX_HEADS], sv[16 * MAX_HEADS];
    for (int h = 0; h < NH; h++)
        for (int i = 0; i < 16; i++)
            for (int j = 0; j < 16; j++) kv[h][i][j] = (float)kv_d[h][i][j];
    for (int c = 0; c < C; c++) {
        ks[c] = (float)ks_d[c];
        vs[c] = (float)vs_d[c];
    }
    for (int o = 0; o < C; o++) {
        float acc = 0.0f;
        for (int k = 0; k < C; k++) acc = fmaf(w_sca[o * C + k], (float)(us_d[k] / N), acc);
        sv[o] = acc + b_sca[o];
    }
    const float den0 = (float)((double)N + 1e-6);

    /* ---- pass 2 (the ring now holds the gate's 1x1 outputs, 2C channels) ---- */
    const size_t grow = (size_t)(W + 2) * S2;
    memset(ring, 0, sizeof(float) * 3 * ring_row);
    for (int y = -1; y < H; y++) {
        if (y + 1 < H)
            pw_row(u + (size_t)(y + 1) * W * C, w_gpw_t, ring + (size_t)((y + 1) % 3) * grow + S2, W, NH, 2 * NH);
        if (y < 0) continue;
        const float *rows3[3] = {y >= 1 ? ring + (size_t)((y - 1) % 3) * grow : zero_row,
                                 ring + (size_t)(y % 3) * grow,
                                 y + 1 < H ? ring + (size_t)((y + 1) % 3) * grow : zero_row};
        const float *q3[3] = {scratch + (size_t)y * qrow, scratch + (size_t)(y + 1) * qrow,
                              scratch + (size_t)(y + 2) * qrow};
        float *dst = out + (size_t)y * W * C;
        for (int px = 0; px < W; px++, dst += C) {
            v16 ge[MAX_HEADS], go[MAX_HEADS], rq[MAX_HEADS], rk[MAX_HEADS];
            for (int h = 0; h < NH; h++) ge[h] = go[h] = rq[h] = rk[h] = splat16(0.0f);
            for (int t = 0; t < 9; t++) {
                const float *gsrc = rows3[t / 3] + (size_t)(px + t % 3) * S2;
                const float *qsrc = q3[t / 3] + (size_t)(px + t % 3) * S2;
                for (int h = 0; h < NH; h++) {
                    ge[h] = fma16(ld16(gsrc + 16 * h), ld16(w_gdw_t + t * S2 + 16 * h), ge[h]);
                    go[h] = fma16(ld16(gsrc + C + 16 * h), ld16(w_gdw_t + t * S2 + C + 16 * h), go[h]);
                    rq[h] = fma16(ld16(qsrc + 32 * h), ld16(w_ref_t + t * S2 + 32 * h), rq[h]);
                    rk[h] = fma16(ld16(qsrc + 32 * h + 16), ld16(w_ref_t + t * S2 + 32 * h + 16), rk[h]);
                }
            }
            const float *qc = q3[1] + (size_t)(px + 1) * S2;
            float o_t[16 * MAX_HEADS];
            for (int h = 0; h < NH; h++) {
                const float r = 1.0f / (1.0f + expf(-(hsum16(rq[h] + rk[h]) + b_ref[h])));
                float qt[16];
                memcpy(qt, qc + 32 * h, sizeof qt);
                const v16 qn = ld16(qt);
                v16 n4[4] = {ld16(vs + 16 * h), splat16(0.0f), splat16(0.0f), splat16(0.0f)};
                for (int i = 0; i < 16; i += 4)
                    for (int q = 0; q < 4; q++) n4[q] = fma16(splat16(qt[i + q]), ld16(kv[h][i + q]), n4[q]);
                const v16 num = (n4[0] + n4[1]) + (n4[2] + n4[3]);
                const float den = hsum16(qn * ld16(ks + 16 * h)) + den0;
                const float scale = temp[h] * r / den;
                st16(o_t + 16 * h, ((num * splat16(scale)) * ld16(sv + 16 * h)) * gelu16(ge[h] + go[h]));
            }
            v16 p4[4][MAX_HEADS];
            for (int q = 0; q < 4; q++)
                for (int h = 0; h < NH; h++) p4[q][h] = splat16(0.0f);
            for (int k = 0; k < C; k += 4)
                for (int q = 0; q < 4; q++) {
                    const v16 ok = splat16(o_t[k + q]);
                    for (int h = 0; h < NH; h++)
                        p4[q][h] = fma16(ok, ld16(w_proj_t + (k + q) * C + 16 * h), p4[q][h]);
                }
            for (int h = 0; h < NH; h++) {
                const v16 a = (p4[0][h] + p4[1][h]) + (p4[2][h] + p4[3][h]);
                st16(dst + 16 * h, res ? ld16(res + (size_t)y * W * C + (size_t)px * C + 16 * h) + a : a);
            }
        }
    }
    free(ring);
    free(zero_row);
    free(w_qkv_t);
    free(w_qdw_t);
    free(w_gpw_t);
    free(w_gdw_t);
    free(w_ref_t);
    free(w_proj_t);
}

int taylor_attention_d16(const float *u, const float *w_sca, const float *b_sca, const float *w_gpw,
                         const float *w_gdw, const float *w_qkv, const float *w_qdw, const float *w_ref,
                         const float *b_ref, const float *temp, const float *w_proj, const float *res, float *scratch,
                         float *out, int H, int W, int heads)
{
    if (heads == 1)
        attention_rows(u, w_sca, b_sca, w_gpw, w_gdw, w_qkv, w_qdw, w_ref, b_ref, temp, w_proj, res, scratch, out, H, W, 1);
    else if (heads == 2)
        attention_rows(u, w_sca, b_sca, w_gpw, w_gdw, w_qkv, w_qdw, w_ref, b_ref, temp, w_proj, res, scratch, out, H, W, 2);
    else
        return -1;
    return 0;
}
/* ------------------------------------------------------------------------------------------
 * One step of a MUSE dense block (blocks.DenseBlock): a 3x3 conv with dilation (d, 1) and
 * padding (d, 1), Cin -> 16 channels with bias, then InstanceNorm (affine, eps 1e-5, statistics
 * in float64 as torch's kernel) and PReLU (one slope per channel).
 * The conv: Cout = 16 = one register per output pixel; a tile of PT consecutive output pixels
 * of one row keeps PT accumulators; each kernel row is summed from zero over (kx, Cin) with the
 * input value broadcast, then added to the output row (three shorter summation chains, as a
 * blocked GEMM). Zero padding: out-of-range kernel rows are skipped, and the first and last tile
 * of a row drop their out-of-range column taps at compile time. Output rows are visited by
 * residue class mod d, so consecutive ones share two of their three input rows in the cache.
 * Input and output are channels-last with pixel strides (a channel slice of the block's
 * concatenation buffer).
 * ------------------------------------------------------------------------------------------ */
#define PT 4 /* output pixels per register tile; 4 was the fastest of 4..16 on this CPU */

#define AI static inline __attribute__((always_inline))

/* acc[p] += sum_c in[p*xs + c] * wk[c]   for p in [p0, p1)  */
AI void accum(const int P, const int p0, const int p1, v16 *acc,
              const float *in, const v16 *wk, int xs, int Cin)
{
    for (int c = 0; c < Cin; c++) {
        v16 wv = wk[c];
        #pragma GCC unroll 16
        for (int p = 0; p < P; p++)
            if (p >= p0 && p < p1)
                acc[p] += in[(long)p * xs + c] * wv;
    }
}

/* P output pixels starting at column x0 for one kernel row.
 * L: tile touches the left border (x0 == 0), R: the right border
 * (x0 + P == W).  first: store bias + acc, else out += acc.           */
AI void tile(const int P, const int L, const int R, const float *row,
             const v16 *wr, int first, int xs, int Cin, int x0, v16 bias,
             float *out, int os)
{
    v16 acc[P];
    #pragma GCC unroll 16
    for (int p = 0; p < P; p++) acc[p] = (v16){0};
    const float *in = row + (long)x0 * xs;
    /* kx = 0 reads column x0+p-1, kx = 1 column x0+p, kx = 2 column x0+p+1 */
    accum(P, L ? 1 : 0, P, acc, in - xs, wr, xs, Cin);
    accum(P, 0, P, acc, in, wr + Cin, xs, Cin);
    accum(P, 0, R ? P - 1 : P, acc, in + xs, wr + 2 * Cin, xs, Cin);
    #pragma GCC unroll 16
    for (int p = 0; p < P; p++) {
        float *o = out + (long)(x0 + p) * os;
        v16 t;
        if (first) t = bias;
        else memcpy(&t, o, 64);
        t += acc[p];
        memcpy(o, &t, 64);
    }
}

#define RCASE(L, n) case n: tile(n, L, 1, row, wr, first, xs, Cin, x, bias, orow, os); break;

/* Right-most tile of a row (width n = 1..PT), L says whether it is also the
 * left-most one.                                                        */
#define LAST_TILE(L)                                                        \
    switch (W - x) {                                                       \
        RCASE(L, 1) RCASE(L, 2) RCASE(L, 3) RCASE(L, 4) RCASE(L, 5) RCASE(L, 6) RCASE(L, 7)     \
        RCASE(L, 8) RCASE(L, 9) RCASE(L, 10) RCASE(L, 11) RCASE(L, 12) RCASE(L, 13)          \
        RCASE(L, 14) RCASE(L, 15) RCASE(L, 16)                                      \
        default: break;                                                    \
    }

typedef float v8f __attribute__((vector_size(32)));
typedef double v8d __attribute__((vector_size(64)));

/* stats[0..3] += the float64 sums of y (channels 0-7, 8-15) and y^2 over one finished output row */
static inline void row_stats(const float *orow, int W, int os, v8d *stats)
{
    for (int p = 0; p < W; p++) {
        v8f lo, hi;
        memcpy(&lo, orow + (size_t)p * os, sizeof lo);
        memcpy(&hi, orow + (size_t)p * os + 8, sizeof hi);
        const v8d dl = __builtin_convertvector(lo, v8d), dh = __builtin_convertvector(hi, v8d);
        stats[0] += dl;
        stats[1] += dh;
        stats[2] += dl * dl;
        stats[3] += dh * dh;
    }
}

static void dense_conv3x3_s(const float *x, int x_pixel_stride, const float *w,
                            const float *b, float *out, int out_pixel_stride,
                            int H, int W, int Cin, int d, v8d *stats)
{
    const int xs = x_pixel_stride, os = out_pixel_stride;
    /* pack weights: wp[(ky*3 + kx)*Cin + c][co] = w[co][c][ky][kx] */
    v16 *wp = aligned_alloc(64, sizeof(v16) * 9 * Cin);
    for (int ky = 0; ky < 3; ky++)
        for (int kx = 0; kx < 3; kx++)
            for (int c = 0; c < Cin; c++)
                for (int co = 0; co < 16; co++)
                    wp[(ky * 3 + kx) * Cin + c][co] = w[((co * Cin + c) * 3 + ky) * 3 + kx];
    v16 bias;
    memcpy(&bias, b, 64);

    /* Output rows are visited by residue class mod d so that consecutive
     * output rows (y, y+d) share two of their three input rows (cache reuse). */
    for (int r0 = 0; r0 < d && r0 < H; r0++)
    for (int y = r0; y < H; y += d) {
        float *orow = out + (long)y * W * os;
        int first = 1;
        for (int ky = 0; ky < 3; ky++) {
            int yy = y + (ky - 1) * d;
            if (yy < 0 || yy >= H) continue;
            const float *row = x + (long)yy * W * xs;
            const v16 *wr = wp + ky * 3 * Cin;
            int x = 0;
            if (W <= PT) {
                LAST_TILE(1)
            } else {
                tile(PT, 1, 0, row, wr, first, xs, Cin, 0, bias, orow, os);
                x = PT;
                for (; x + PT < W; x += PT)
                    tile(PT, 0, 0, row, wr, first, xs, Cin, x, bias, orow, os);
                LAST_TILE(0)
            }
            first = 0;
        }
        row_stats(orow, W, os, stats);  /* while the row is in the cache */
    }
    free(wp);
}


/* out = prelu(x alpha + beta) over n pixels of 16 channels, alpha and beta from the float64 sums in
 * stats (row_stats over the same n pixels; var = E[x^2] - mean^2) and the InstanceNorm affine
 * in_w, in_b; x and out may be the same buffer. Always inlined: as a called function it made
 * GCC compile dense_step's convolution ~1.45x slower (four steps at 308 x 128: 17.9 -> 26.0 ms). */
AI void norm_prelu16(const float *x, int xs, size_t n, const v8d *stats, const float *in_w, const float *in_b,
                     const float *slope, float *out, int os)
{
    double mean[16], var[16];
    for (int c = 0; c < 8; c++) {
        mean[c] = stats[0][c] / (double)n;
        mean[8 + c] = stats[1][c] / (double)n;
        var[c] = stats[2][c] / (double)n - mean[c] * mean[c];
        var[8 + c] = stats[3][c] / (double)n - mean[8 + c] * mean[8 + c];
    }
    float alpha[16], beta[16];
    for (int c = 0; c < 16; c++) {
        const double a = (double)in_w[c] / sqrt(var[c] + 1e-5);
        alpha[c] = (float)a;
        beta[c] = (float)((double)in_b[c] - mean[c] * a);
    }
    const v16 av = ld16(alpha), bv = ld16(beta), sv = ld16(slope), zero = splat16(0.0f);
    for (size_t p = 0; p < n; p++) {
        const v16 y = fma16(ld16(x + p * xs), av, bv);
        const v16i keep = y >= zero;  /* lanes of -1 where y >= 0 */
        st16(out + p * os, (v16)(((v16i)y & keep) | ((v16i)(y * sv) & ~keep)));
    }
}

/*   x      (H, W, >= Cin) channels-last, pixel stride xs (a channel slice of a wider buffer)
 *   w      (16, Cin, 3, 3), b (16)      conv weight and bias
 *   in_w, in_b (16)                     InstanceNorm affine weight and bias
 *   slope  (16)                         PReLU slopes
 *   out    (H, W, >= 16), pixel stride os; it must not overlap x's channels
 * y = conv(x); per channel mean and var of y over the H W pixels in float64 (one pass); then
 * alpha = in_w / sqrt(var + 1e-5), beta = in_b - mean alpha (rounded to float32) and
 * out = prelu(y alpha + beta). */
void dense_step(const float *x, int xs, const float *w, const float *b, const float *in_w, const float *in_b,
                const float *slope, float *out, int os, int H, int W, int Cin, int d)
{
    /* the conv accumulates the float64 sums of y and y^2 row by row (var = E[y^2] - mean^2 is
     * exact enough in float64, as in blocks._InstanceNormCL) */
    v8d stats[4] = {{0}, {0}, {0}, {0}};
    dense_conv3x3_s(x, xs, w, b, out, os, H, W, Cin, d, stats);
    norm_prelu16(out, os, (size_t)H * W, stats, in_w, in_b, slope, out, os);
}

/* InstanceNorm2d (affine) and PReLU of one channels-last map of C channels, as blocks._InstanceNormCL
 * then nn.PReLU (and as dense_step's tail): per channel mean and var over the n pixels in float64
 * (one pass, var = E[x^2] - mean^2), alpha = in_w / sqrt(var + 1e-5) and beta = in_b - mean alpha
 * rounded to float32, out = prelu(x alpha + beta) with slope[c] (n_slope = C) or slope[0] (n_slope = 1).
 *   x (n, >= C) pixel stride xs; out (n, >= C) pixel stride os, may be x.
 * C = 16 (vectorised) or 1; returns -1 for other C or n_slope. */
int norm_prelu_cl(const float *x, int xs, const float *in_w, const float *in_b, const float *slope, int n_slope,
                  float *out, int os, int n, int C)
{
    if ((C != 16 && C != 1) || (n_slope != C && n_slope != 1) || n < 1) return -1;
    if (C == 16) {
        float s16[16];
        for (int c = 0; c < 16; c++) s16[c] = slope[n_slope == 1 ? 0 : c];
        v8d stats[4] = {{0}, {0}, {0}, {0}};
        row_stats(x, n, xs, stats);
        norm_prelu16(x, xs, (size_t)n, stats, in_w, in_b, s16, out, os);
        return 0;
    }
    double sum = 0.0, sq = 0.0;
    for (size_t p = 0; p < (size_t)n; p++) {
        const double v = x[p * xs];
        sum += v;
        sq += v * v;
    }
    const double mean = sum / (double)n, a = (double)in_w[0] / sqrt(sq / (double)n - mean * mean + 1e-5);
    const float alpha = (float)a, beta = (float)((double)in_b[0] - mean * a), sl = slope[0];
    for (size_t p = 0; p < (size_t)n; p++) {
        const float y = x[p * xs] * alpha + beta;
        out[p * os] = y >= 0.0f ? y : y * sl;
    }
    return 0;
}

/* C channels of n pixels copied into a channels-last buffer with pixel stride os:
 * out[p * os + c] = x[p * ps + c * cs] (an NCHW item: ps = 1, cs = n; channels-last: ps = C, cs = 1).
 * The dense blocks' input into their concatenation buffer: torch's strided copies of the same maps
 * took ~2.5-5 ms per 16 x 308 x 256 map inside the forward pass. */
void copy_pixels(const float *x, int ps, int cs, int n, int C, float *out, int os)
{
    for (size_t p = 0; p < (size_t)n; p++)
        for (int c = 0; c < C; c++)
            out[p * os + c] = x[p * ps + (size_t)c * cs];
}

/* The bias-free LayerNorm of MUSE's transformer blocks (model.BiasFreeLayerNormBody) on npix
 * channels-last pixels of C channels (16, 32 or 48; else -1): out = x / sqrt(var_C(x) + 1e-5) * w,
 * the mean kept in the numerator, mean and variance (two-pass) over the C channels in float32. */
int layer_norm_cl(const float *x, const float *w, float *out, int npix, int C)
{
    if (C != 16 && C != 32 && C != 48) return -1;
    for (size_t p = 0; p < (size_t)npix; p++) {
        if (C == 16)
            layer_norm_px(x + p * 16, w, out + p * 16, 1);
        else if (C == 32)
            layer_norm_px(x + p * 32, w, out + p * 32, 2);
        else
            layer_norm_px(x + p * 48, w, out + p * 48, 3);
    }
    return 0;
}

/* ------------------------------------------------------------------------------------------
 * A deformable patch embedding, fused (blocks.DeformPatchConv), for C = 16, 32 or 48 (else -1):
 *   offsets = clamp(W_off (dw3x3_off(x)), -1, 1)     (depthwise 3x3, zero padding; 1x1 C -> 18)
 *   y = hardswish(W_pw deform_dw3x3(x, offsets))     (the sampler of deform_dw3x3, float64)
 * per pixel in one pass; the offsets never reach memory.
 *   x (H, W, C); w_odw (C, 9); w_opw (18, C); w_dcn (C, 9); w_pw (C, C); out (H, W, C)
 * ------------------------------------------------------------------------------------------ */
static inline __attribute__((always_inline)) void embed_rows(const float *x, const float *w_odw_t,
                                                             const float *w_opw_t, const double *kd,
                                                             const float *w_pw_t, float *out, int H, int W,
                                                             const int NB)
{
    const int C = 16 * NB;
    const v16 zero = splat16(0.0f), three = splat16(3.0f), six = splat16(6.0f);
    for (int y = 0; y < H; y++)
        for (int xx = 0; xx < W; xx++) {
            v16 od[3];
            for (int b = 0; b < NB; b++) od[b] = zero;
            for (int t = 0; t < 9; t++) {
                const int yy = y + t / 3 - 1, xs = xx + t % 3 - 1;
                if (yy < 0 || yy >= H || xs < 0 || xs >= W) continue;
                const float *src = x + ((size_t)yy * W + xs) * C;
                for (int b = 0; b < NB; b++) od[b] = fma16(ld16(src + 16 * b), ld16(w_odw_t + t * C + 16 * b), od[b]);
            }
            float odt[48], off[32], smp[48];
            for (int b = 0; b < NB; b++) st16(odt + 16 * b, od[b]);
            /* the 18 offsets as two vectors of lanes k (16 + 2 used), each lane one fused
             * multiply-add chain over c in order: the arithmetic of a scalar fmaf loop per k */
            v16 o0 = zero, o1 = zero;
            for (int c = 0; c < C; c++) {
                const v16 s = splat16(odt[c]);
                o0 = fma16(s, ld16(w_opw_t + c * 32), o0);
                o1 = fma16(s, ld16(w_opw_t + c * 32 + 16), o1);
            }
            const v16 lo1 = splat16(-1.0f), hi1 = splat16(1.0f);
            o0 = (v16)(((v16i)o0 & ~(o0 < lo1)) | ((v16i)lo1 & (o0 < lo1)));
            o0 = (v16)(((v16i)o0 & ~(o0 > hi1)) | ((v16i)hi1 & (o0 > hi1)));
            o1 = (v16)(((v16i)o1 & ~(o1 < lo1)) | ((v16i)lo1 & (o1 < lo1)));
            o1 = (v16)(((v16i)o1 & ~(o1 > hi1)) | ((v16i)hi1 & (o1 > hi1)));
            st16(off, o0);
            st16(off + 16, o1);
            deform_px_c(x, off, kd, smp, H, W, C, y, xx);
            v16 p4[4][3];
            for (int q = 0; q < 4; q++)
                for (int b = 0; b < NB; b++) p4[q][b] = zero;
            for (int k = 0; k < C; k += 4)
                for (int q = 0; q < 4; q++) {
                    const v16 sk = splat16(smp[k + q]);
                    for (int b = 0; b < NB; b++) p4[q][b] = fma16(sk, ld16(w_pw_t + (k + q) * C + 16 * b), p4[q][b]);
                }
            float *dst = out + ((size_t)y * W + xx) * C;
            for (int b = 0; b < NB; b++) {
                const v16 v = (p4[0][b] + p4[1][b]) + (p4[2][b] + p4[3][b]);
                v16 r = v + three;  /* hardswish: v * min(max(v + 3, 0), 6) / 6 */
                const v16i lo = r < zero, hi = r > six;
                r = (v16)(((v16i)r & ~lo) & ~hi) + (v16)((v16i)six & hi);
                st16(dst + 16 * b, (v * r) / six);
            }
        }
}

int deform_embed(const float *x, const float *w_odw, const float *w_opw, const float *w_dcn, const float *w_pw,
                 float *out, int H, int W, int C)
{
    if (C != 16 && C != 32 && C != 48) return -1;
    float *w_odw_t = malloc(sizeof(float) * 9 * C), *w_pw_t = malloc(sizeof(float) * C * C);
    float *w_opw_t = calloc((size_t)32 * C, sizeof(float));  /* w_opw_t[c * 32 + k] = w_opw[k, c], k < 18 */
    double *kd = malloc(sizeof(double) * TAPS * C);
    for (int k = 0; k < 2 * TAPS; k++)
        for (int c = 0; c < C; c++) w_opw_t[c * 32 + k] = w_opw[k * C + c];
    for (int c = 0; c < C; c++)
        for (int t = 0; t < 9; t++) {
            w_odw_t[t * C + c] = w_odw[c * 9 + t];
            kd[t * C + c] = (double)w_dcn[c * 9 + t];
        }
    for (int o = 0; o < C; o++)
        for (int k = 0; k < C; k++) w_pw_t[k * C + o] = w_pw[o * C + k];
    if (C == 16)
        embed_rows(x, w_odw_t, w_opw_t, kd, w_pw_t, out, H, W, 1);
    else if (C == 32)
        embed_rows(x, w_odw_t, w_opw_t, kd, w_pw_t, out, H, W, 2);
    else
        embed_rows(x, w_odw_t, w_opw_t, kd, w_pw_t, out, H, W, 3);
    free(w_odw_t);
    free(w_opw_t);
    free(w_pw_t);
    free(kd);
    return 0;
}
#pragma GCC pop_options
