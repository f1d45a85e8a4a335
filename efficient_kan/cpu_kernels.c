/* The eager CPU path's elementwise work in C (see cpu_kernels.py, which builds and calls it).

   Each function walks rows of a row-major matrix; every pointer may be offset into a larger
   matrix (a block of input features), so each takes a row stride. T is float or double, the
   suffix says which. Bases, per input feature with knots t (n_knots of them) and order K:
   nb = n_knots - 1 - K lanes, of which at most K + 1 (lanes span - K .. span) are non-zero.

   - kan_expand_*: write each feature's nb basis lanes (zeros included).
   - kan_expand_grad_*: dx += sum over the non-zero lanes of g[lane] * dB_lane/dx.
   - kan_pack, kan_pack_grads: the weights in the expanded input's layout, and back.
   - uniform: knots t_j = t_0 + j h; the span is a floor and the K + 1 values are fixed
     polynomials in the position within it (their coefficients come from Python, exact).
   - general: any strictly increasing knots; the span by bisection, values by de Boor's
     triangular scheme ("The NURBS Book", A2.2), derivatives from the order K - 1 values.
   Inputs outside [t_0, t_last) (and NaN) have no non-zero lane, as in the PyTorch code. */

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#define CHUNK 64   /* features per vectorised step of the uniform kernels */
#define MAX_K 16   /* highest order the general kernels take */

/* ---- uniform knots: u = x / h + shift = 1 + position in knot intervals, clamped to [0, n_knots]
   (NaN to 0); s = floor(u); lanes s - 1 - K + r, r = 0..K; t = u - s. K is a compile-time
   constant so that the loop over a chunk of features vectorises. */
#define DEFINE_UNIFORM(T, SUF, K)                                                                   \
  /* For the m <= CHUNK features of a chunk: span[q] and, per lane r, the polynomial c[r] of degree \
     deg (coefficients from t^0 up) at t[q]. Always inlined with a constant deg, so it vectorises. */ \
  static inline __attribute__((always_inline)) void chunk_##SUF##_##K(                              \
      const T* x, const T* inv_h, const T* shift, T top, int64_t m, int deg, T c[K + 1][K + 1],     \
      int32_t* span, T vals[K + 1][CHUNK]) {                                                        \
    for (int64_t q = 0; q < m; ++q) {                                                               \
      T u = shift[q] + x[q] * inv_h[q];                                                             \
      u = u >= (T)0 ? u : (T)0;                                                                     \
      u = u <= top ? u : top;                                                                       \
      const int32_t s = (int32_t)u;                                                                 \
      const T t = u - (T)s;                                                                         \
      span[q] = s;                                                                                  \
      for (int r = 0; r <= K; ++r) {                                                                \
        T v = c[r][deg];                                                                            \
        for (int p = deg - 1; p >= 0; --p) v = v * t + c[r][p];                                     \
        vals[r][q] = v;                                                                             \
      }                                                                                             \
    }                                                                                               \
  }                                                                                                 \
  static void expand_uniform_##SUF##_##K(const T* x, int64_t x_stride, int64_t n_rows,              \
                                         int64_t width, const T* inv_h, const T* shift,             \
                                         int64_t n_knots, const T* coef, T* out,                    \
                                         int64_t out_stride) {                                      \
    const int64_t nb = n_knots - 1 - K;                                                             \
    T c[K + 1][K + 1];                                                                              \
    for (int r = 0; r <= K; ++r)                                                                    \
      for (int p = 0; p <= K; ++p) c[r][p] = coef[r * (K + 1) + p];                                 \
    for (int64_t n = 0; n < n_rows; ++n) {                                                          \
      T* row = out + n * out_stride;                                                                \
      memset(row, 0, sizeof(T) * (size_t)(width * nb));                                             \
      for (int64_t i0 = 0; i0 < width; i0 += CHUNK) {                                               \
        const int64_t m = width - i0 < CHUNK ? width - i0 : CHUNK;                                  \
        int32_t span[CHUNK];                                                                        \
        T vals[K + 1][CHUNK];                                                                       \
        chunk_##SUF##_##K(x + n * x_stride + i0, inv_h + i0, shift + i0, (T)n_knots, m, K, c, span, \
                          vals);                                                                    \
        for (int64_t q = 0; q < m; ++q) {                                                           \
          T* b = row + (i0 + q) * nb;                                                               \
          const int64_t first = (int64_t)span[q] - 1 - K;                                           \
          for (int r = 0; r <= K; ++r) {                                                            \
            const int64_t j = first + r;                                                            \
            if (j >= 0 && j < nb) b[j] = vals[r][q];                                                \
          }                                                                                         \
        }                                                                                           \
      }                                                                                             \
    }                                                                                               \
  }                                                                                                 \
  static void expand_grad_uniform_##SUF##_##K(const T* x, int64_t x_stride, int64_t n_rows,         \
                                              int64_t width, const T* inv_h, const T* shift,        \
                                              int64_t n_knots, const T* coef, const T* g,           \
                                              int64_t g_stride, T* dx, int64_t dx_stride) {         \
    const int64_t nb = n_knots - 1 - K;                                                             \
    T d[K + 1][K + 1]; /* d[r][p]: coefficient of t^p in d(value r)/dt */                           \
    for (int r = 0; r <= K; ++r) {                                                                  \
      for (int p = 0; p < K; ++p) d[r][p] = (T)(p + 1) * coef[r * (K + 1) + p + 1];                 \
      d[r][K] = (T)0;                                                                               \
    }                                                                                               \
    for (int64_t n = 0; n < n_rows; ++n) {                                                          \
      const T* gr = g + n * g_stride;                                                               \
      T* dxr = dx + n * dx_stride;                                                                  \
      for (int64_t i0 = 0; i0 < width; i0 += CHUNK) {                                               \
        const int64_t m = width - i0 < CHUNK ? width - i0 : CHUNK;                                  \
        int32_t span[CHUNK];                                                                        \
        T ders[K + 1][CHUNK]; /* d/dt; d/dx is that times 1/h */                                    \
        chunk_##SUF##_##K(x + n * x_stride + i0, inv_h + i0, shift + i0, (T)n_knots, m, K - 1, d,   \
                          span, ders);                                                              \
        for (int64_t q = 0; q < m; ++q) {                                                           \
          const T* gl = gr + (i0 + q) * nb;                                                         \
          const int64_t first = (int64_t)span[q] - 1 - K;                                           \
          T acc = (T)0;                                                                             \
          for (int r = 0; r <= K; ++r) {                                                            \
            const int64_t j = first + r;                                                            \
            if (j >= 0 && j < nb) acc += gl[j] * ders[r][q];                                        \
          }                                                                                         \
          dxr[i0 + q] += acc * inv_h[i0 + q];                                                       \
        }                                                                                           \
      }                                                                                             \
    }                                                                                               \
  }

/* ---- general knots (one row of n_knots per feature). Knots past either end, which only shape
   lanes that are dropped, are extended at the end spacings so that no denominator is 0. */
#define DEFINE_GENERAL(T, SUF)                                                                      \
  static T knot_##SUF(const T* t, int64_t n_knots, int64_t j) {                                     \
    if (j < 0) return t[0] + (T)j * (t[1] - t[0]);                                                  \
    if (j >= n_knots) return t[n_knots - 1] + (T)(j - n_knots + 1) * (t[n_knots - 1] - t[n_knots - 2]); \
    return t[j];                                                                                    \
  }                                                                                                 \
  /* Span s (t[s] <= x < t[s + 1]) and the order-k and order-(k-1) values at x, or -1 outside. */   \
  static int64_t de_boor_##SUF(const T* t, int64_t n_knots, int64_t k, T xv, T* vals, T* lower) {   \
    if (!(xv >= t[0] && xv < t[n_knots - 1])) return -1;                                            \
    int64_t lo = 0, hi = n_knots - 1;                                                               \
    while (hi - lo > 1) {                                                                           \
      const int64_t mid = (lo + hi) / 2;                                                            \
      if (t[mid] <= xv) lo = mid; else hi = mid;                                                    \
    }                                                                                               \
    T left[MAX_K + 1], right[MAX_K + 1];                                                            \
    vals[0] = (T)1;                                                                                 \
    lower[0] = (T)1;                                                                                \
    for (int64_t j = 1; j <= k; ++j) {                                                              \
      if (j == k)                                                                                   \
        for (int64_t r = 0; r < k; ++r) lower[r] = vals[r];                                         \
      left[j] = xv - knot_##SUF(t, n_knots, lo + 1 - j);                                            \
      right[j] = knot_##SUF(t, n_knots, lo + j) - xv;                                               \
      T saved = (T)0;                                                                               \
      for (int64_t r = 0; r < j; ++r) {                                                             \
        const T temp = vals[r] / (right[r + 1] + left[j - r]);                                      \
        vals[r] = saved + right[r + 1] * temp;                                                      \
        saved = left[j - r] * temp;                                                                 \
      }                                                                                             \
      vals[j] = saved;                                                                              \
    }                                                                                               \
    return lo;                                                                                      \
  }                                                                                                 \
  static void expand_general_##SUF(const T* x, int64_t x_stride, int64_t n_rows, int64_t width,     \
                                   const T* knots, int64_t n_knots, int64_t k, T* out,              \
                                   int64_t out_stride) {                                            \
    const int64_t nb = n_knots - 1 - k;                                                             \
    for (int64_t n = 0; n < n_rows; ++n) {                                                          \
      T* row = out + n * out_stride;                                                                \
      memset(row, 0, sizeof(T) * (size_t)(width * nb));                                             \
      for (int64_t i = 0; i < width; ++i) {                                                         \
        T vals[MAX_K + 1], lower[MAX_K + 1];                                                        \
        const int64_t s = de_boor_##SUF(knots + i * n_knots, n_knots, k, x[n * x_stride + i], vals, lower); \
        if (s < 0) continue;                                                                        \
        for (int64_t r = 0; r <= k; ++r) {                                                          \
          const int64_t j = s - k + r;                                                              \
          if (j >= 0 && j < nb) row[i * nb + j] = vals[r];                                          \
        }                                                                                           \
      }                                                                                             \
    }                                                                                               \
  }                                                                                                 \
  /* dB_j/dx = k (B_{j,k-1} / (t_{j+k} - t_j) - B_{j+1,k-1} / (t_{j+k+1} - t_{j+1})), with the      \
     order k-1 values lower[q] = B_{s-k+1+q, k-1}, q = 0..k-1. */                                   \
  static void expand_grad_general_##SUF(const T* x, int64_t x_stride, int64_t n_rows,               \
                                        int64_t width, const T* knots, int64_t n_knots, int64_t k,  \
                                        const T* g, int64_t g_stride, T* dx, int64_t dx_stride) {   \
    const int64_t nb = n_knots - 1 - k;                                                             \
    if (k == 0) return; /* piecewise constant: derivative 0 */                                      \
    for (int64_t n = 0; n < n_rows; ++n) {                                                          \
      for (int64_t i = 0; i < width; ++i) {                                                         \
        const T* t = knots + i * n_knots;                                                           \
        T vals[MAX_K + 1], lower[MAX_K + 1];                                                        \
        const int64_t s = de_boor_##SUF(t, n_knots, k, x[n * x_stride + i], vals, lower);           \
        if (s < 0) continue;                                                                        \
        const T* gl = g + n * g_stride + i * nb;                                                    \
        T acc = (T)0;                                                                               \
        for (int64_t r = 0; r <= k; ++r) {                                                          \
          const int64_t j = s - k + r;                                                              \
          if (j < 0 || j >= nb) continue;                                                           \
          T der = (T)0;                                                                             \
          if (r >= 1) der += lower[r - 1] / (knot_##SUF(t, n_knots, j + k) - knot_##SUF(t, n_knots, j)); \
          if (r < k) der -= lower[r] / (knot_##SUF(t, n_knots, j + k + 1) - knot_##SUF(t, n_knots, j + 1)); \
          acc += gl[j] * (T)k * der;                                                                \
        }                                                                                           \
        dx[n * dx_stride + i] += acc;                                                               \
      }                                                                                             \
    }                                                                                               \
  }

/* Rows [r0, r1) of one part, the parts split over `threads` OpenMP threads (torch's runtime,
   see cpu_kernels.py). The specialised bodies are chosen inside the loop, so that their constants
   reach the code the compiler outlines for the threads. */
#define PARALLEL_ROWS(N_ROWS, BODY)                                                                 \
  if (threads < 1) threads = 1;                                                                     \
  _Pragma("omp parallel for schedule(static) num_threads(threads) if (threads > 1)")                \
  for (int64_t part = 0; part < threads; ++part) {                                                  \
    const int64_t r0 = (N_ROWS) * part / threads, r1 = (N_ROWS) * (part + 1) / threads;             \
    if (r1 > r0) {                                                                                  \
      BODY                                                                                          \
    }                                                                                               \
  }

#define K_CASES(SUF, CALL)                                                                          \
  switch (k) {                                                                                      \
    case 1: CALL(SUF, 1); break;                                                                    \
    case 2: CALL(SUF, 2); break;                                                                    \
    case 3: CALL(SUF, 3); break;                                                                    \
    case 4: CALL(SUF, 4); break;                                                                    \
    case 5: CALL(SUF, 5); break;                                                                    \
  }

/* The expanded input of a block of `width` input features: its width * nb basis lanes (nb per
   feature), then its width activations (written by the caller). The packed weight matches it:
   per output, the width * nb lanes of spline_weight * spline_scaler, then the width base weights.
   So y = expanded @ packed^T is the layer (plus the bias). Matrices given as column blocks of
   wider ones take the wider one's row stride; NULL marks an absent optional. */
/* ---- the packed weight. The loops over one (output, feature)'s nb lanes only vectorise when nb
   is a compile-time constant (2.6x faster at nb = 8, measured), so the bodies are always inlined
   into a switch over the usual nb (grid_size + spline_order) with a generic case for the rest. */
#define PRODUCTS 4096 /* lanes per chunk of the per-feature dot products */
#define DEFINE_PACK(T, SUF)                                                                         \
  static inline __attribute__((always_inline)) void pack_##SUF(                                     \
      const T* sw, int64_t sw_stride, const T* sc, int64_t sc_stride, const T* bw,                  \
      int64_t bw_stride, int64_t n_out, int64_t width, int64_t nb, T* packed) {                     \
    for (int64_t o = 0; o < n_out; ++o) {                                                           \
      const T* swo = sw + o * sw_stride;                                                            \
      T* po = packed + o * width * (nb + 1);                                                        \
      if (sc == NULL) {                                                                             \
        memcpy(po, swo, sizeof(T) * (size_t)(width * nb));                                          \
      } else {                                                                                      \
        const T* sco = sc + o * sc_stride;                                                          \
        for (int64_t i = 0; i < width; ++i)                                                         \
          for (int64_t j = 0; j < nb; ++j) po[i * nb + j] = swo[i * nb + j] * sco[i];               \
      }                                                                                             \
      memcpy(po + width * nb, bw + o * bw_stride, sizeof(T) * (size_t)width);                       \
    }                                                                                               \
  }                                                                                                 \
  static inline __attribute__((always_inline)) void pack_grads_##SUF(                               \
      const T* d, const T* sw, int64_t sw_stride, const T* sc, int64_t sc_stride, int64_t n_out,    \
      int64_t width, int64_t nb, T* dsw, int64_t dsw_stride, T* dsc, int64_t dsc_stride, T* dbw,    \
      int64_t dbw_stride) {                                                                         \
    const int64_t chunk = PRODUCTS / nb;                                                            \
    for (int64_t o = 0; o < n_out; ++o) {                                                           \
      const T* dox = d + o * width * (nb + 1);                                                      \
      const T* swo = sw + o * sw_stride;                                                            \
      if (dsw != NULL) {                                                                            \
        T* dswo = dsw + o * dsw_stride;                                                             \
        if (sc == NULL) {                                                                           \
          memcpy(dswo, dox, sizeof(T) * (size_t)(width * nb));                                      \
        } else {                                                                                    \
          const T* sco = sc + o * sc_stride;                                                        \
          for (int64_t i = 0; i < width; ++i)                                                       \
            for (int64_t j = 0; j < nb; ++j) dswo[i * nb + j] = dox[i * nb + j] * sco[i];           \
        }                                                                                           \
      }                                                                                             \
      if (dsc != NULL) { /* products in one flat loop, then short sums */                           \
        T products[PRODUCTS];                                                                       \
        T* dsco = dsc + o * dsc_stride;                                                             \
        for (int64_t i0 = 0; i0 < width; i0 += chunk) {                                             \
          const int64_t m = width - i0 < chunk ? width - i0 : chunk;                                \
          const T* dc = dox + i0 * nb;                                                              \
          const T* wc = swo + i0 * nb;                                                              \
          for (int64_t q = 0; q < m * nb; ++q) products[q] = dc[q] * wc[q];                         \
          for (int64_t q = 0; q < m; ++q) {                                                         \
            T acc = (T)0;                                                                           \
            for (int64_t j = 0; j < nb; ++j) acc += products[q * nb + j];                           \
            dsco[i0 + q] = acc;                                                                     \
          }                                                                                         \
        }                                                                                           \
      }                                                                                             \
      if (dbw != NULL) memcpy(dbw + o * dbw_stride, dox + width * nb, sizeof(T) * (size_t)width);   \
    }                                                                                               \
  }

/* ---- the product itself, without the packed weight, for a single row whose weights outgrow the
   cache: the product is then bound by reading the weights, and packing them first (a write and a
   read of the weights' size) costs more than the product (see eager.py for when it is used).
   y[n, o] = bias[o] + sum_i sc[o, i] * sum_j sw[o, i, j] * e[n, i, j] + sum_i bw[o, i] *
   e[n, act i], for the rows e of the expanded input. */
#define DEFINE_UNPACKED(T, SUF)                                                                     \
  static inline __attribute__((always_inline)) void product_unpacked_##SUF(                         \
      const T* e, int64_t e_stride, int64_t n_rows, const T* sw, int64_t sw_stride, const T* sc,    \
      int64_t sc_stride, const T* bw, int64_t bw_stride, const T* bias, int64_t n_out,              \
      int64_t width, int64_t nb, T* y, int64_t y_stride) {                                          \
    const int64_t chunk = PRODUCTS / nb;                                                            \
    for (int64_t o = 0; o < n_out; ++o) {                                                           \
      const T* swo = sw + o * sw_stride;                                                            \
      const T* bwo = bw + o * bw_stride;                                                            \
      for (int64_t n = 0; n < n_rows; ++n) {                                                        \
        const T* en = e + n * e_stride;                                                             \
        T acc = bias == NULL ? (T)0 : bias[o];                                                      \
        for (int64_t i0 = 0; i0 < width; i0 += chunk) { /* flat products, short sums, a dot */      \
          const int64_t m = width - i0 < chunk ? width - i0 : chunk;                                \
          T products[PRODUCTS], sums[PRODUCTS];                                                     \
          const T* wc = swo + i0 * nb;                                                              \
          const T* ec = en + i0 * nb;                                                               \
          for (int64_t q = 0; q < m * nb; ++q) products[q] = wc[q] * ec[q];                         \
          for (int64_t q = 0; q < m; ++q) {                                                         \
            T t = (T)0;                                                                             \
            for (int64_t j = 0; j < nb; ++j) t += products[q * nb + j];                             \
            sums[q] = t;                                                                            \
          }                                                                                         \
          if (sc == NULL) {                                                                         \
            for (int64_t q = 0; q < m; ++q) acc += sums[q];                                         \
          } else {                                                                                  \
            const T* scc = sc + o * sc_stride + i0;                                                 \
            for (int64_t q = 0; q < m; ++q) acc += scc[q] * sums[q];                                \
          }                                                                                         \
        }                                                                                           \
        const T* act = en + width * nb;                                                             \
        for (int64_t i = 0; i < width; ++i) acc += bwo[i] * act[i];                                 \
        y[n * y_stride + o] = acc;                                                                  \
      }                                                                                             \
    }                                                                                               \
  }

#define NB_CASES(SUF, CALL)                                                                         \
  switch (nb) {                                                                                     \
    case 2: CALL(SUF, 2); break;   case 3: CALL(SUF, 3); break;   case 4: CALL(SUF, 4); break;      \
    case 5: CALL(SUF, 5); break;   case 6: CALL(SUF, 6); break;   case 7: CALL(SUF, 7); break;      \
    case 8: CALL(SUF, 8); break;   case 9: CALL(SUF, 9); break;   case 10: CALL(SUF, 10); break;    \
    case 11: CALL(SUF, 11); break; case 12: CALL(SUF, 12); break; case 13: CALL(SUF, 13); break;    \
    case 14: CALL(SUF, 14); break; case 15: CALL(SUF, 15); break; case 16: CALL(SUF, 16); break;    \
    case 23: CALL(SUF, 23); break; default: CALL(SUF, nb); break;                                   \
  }

#define DEFINE_ALL(T, SUF)                                                                          \
  DEFINE_UNIFORM(T, SUF, 1)                                                                         \
  DEFINE_UNIFORM(T, SUF, 2)                                                                         \
  DEFINE_UNIFORM(T, SUF, 3)                                                                         \
  DEFINE_UNIFORM(T, SUF, 4)                                                                         \
  DEFINE_UNIFORM(T, SUF, 5)                                                                         \
  DEFINE_GENERAL(T, SUF)                                                                            \
  /* Returns 1 (nothing done) for an order without a uniform kernel: use the general one. */        \
  int kan_expand_uniform_##SUF(const T* x, int64_t x_stride, int64_t n_rows, int64_t width,         \
                               const T* inv_h, const T* shift, int64_t n_knots, int64_t k,          \
                               const T* coef, T* out, int64_t out_stride, int64_t threads) {        \
    if (k < 1 || k > 5) return 1;                                                                   \
    PARALLEL_ROWS(n_rows, K_CASES(SUF, EXPAND))                                                     \
    return 0;                                                                                       \
  }                                                                                                 \
  /* dx += sum over each feature's basis lanes of g[lane] * dB_lane/dx. */                          \
  int kan_expand_grad_uniform_##SUF(const T* x, int64_t x_stride, int64_t n_rows, int64_t width,    \
                                    const T* inv_h, const T* shift, int64_t n_knots, int64_t k,     \
                                    const T* coef, const T* g, int64_t g_stride, T* dx,             \
                                    int64_t dx_stride, int64_t threads) {                           \
    if (k < 1 || k > 5) return 1;                                                                   \
    PARALLEL_ROWS(n_rows, K_CASES(SUF, GRAD))                                                       \
    return 0;                                                                                       \
  }                                                                                                 \
  /* Return 1 (nothing done) above MAX_K. */                                                        \
  int kan_expand_general_##SUF(const T* x, int64_t x_stride, int64_t n_rows, int64_t width,         \
                               const T* knots, int64_t n_knots, int64_t k, T* out,                  \
                               int64_t out_stride, int64_t threads) {                               \
    if (k < 0 || k > MAX_K) return 1;                                                               \
    PARALLEL_ROWS(n_rows, expand_general_##SUF(x + r0 * x_stride, x_stride, r1 - r0, width, knots,  \
                                               n_knots, k, out + r0 * out_stride, out_stride);)     \
    return 0;                                                                                       \
  }                                                                                                 \
  int kan_expand_grad_general_##SUF(const T* x, int64_t x_stride, int64_t n_rows, int64_t width,    \
                                    const T* knots, int64_t n_knots, int64_t k, const T* g,         \
                                    int64_t g_stride, T* dx, int64_t dx_stride, int64_t threads) {  \
    if (k < 0 || k > MAX_K) return 1;                                                               \
    PARALLEL_ROWS(n_rows, expand_grad_general_##SUF(x + r0 * x_stride, x_stride, r1 - r0, width,    \
                                                    knots, n_knots, k, g + r0 * g_stride, g_stride, \
                                                    dx + r0 * dx_stride, dx_stride);)               \
    return 0;                                                                                       \
  }                                                                                                 \
  DEFINE_PACK(T, SUF)                                                                               \
  DEFINE_UNPACKED(T, SUF)                                                                           \
  /* y (n_rows x n_out) = the layer on n_rows rows e of the expanded input (DEFINE_UNPACKED). */    \
  void kan_product_unpacked_##SUF(const T* e, int64_t e_stride, int64_t n_rows, const T* sw,        \
                                  int64_t sw_stride, const T* sc, int64_t sc_stride, const T* bw,   \
                                  int64_t bw_stride, const T* bias, int64_t n_out, int64_t width,   \
                                  int64_t nb, T* y, int64_t y_stride, int64_t threads) {            \
    PARALLEL_ROWS(n_out, NB_CASES(SUF, UNPACKED))                                                   \
  }                                                                                                 \
  /* packed (n_out x width * (nb + 1), contiguous) from spline_weight sw (n_out x width x nb),      \
     its scaler sc (n_out x width, or NULL) and base_weight bw (n_out x width). */                  \
  void kan_pack_##SUF(const T* sw, int64_t sw_stride, const T* sc, int64_t sc_stride, const T* bw,  \
                      int64_t bw_stride, int64_t n_out, int64_t width, int64_t nb, T* packed,       \
                      int64_t threads) {                                                            \
    PARALLEL_ROWS(n_out, NB_CASES(SUF, PACK))                                                       \
  }                                                                                                 \
  /* The packed weight's gradient d (as packed) split into the parameters' gradients:               \
     dsw = d_spline * sc (d_spline where sc is NULL), dsc[o, i] = sum_j d_spline[o, i, j] *         \
     sw[o, i, j], dbw = d's base lanes. Each output may be NULL (not wanted). */                    \
  void kan_pack_grads_##SUF(const T* d, const T* sw, int64_t sw_stride, const T* sc,                \
                            int64_t sc_stride, int64_t n_out, int64_t width, int64_t nb, T* dsw,    \
                            int64_t dsw_stride, T* dsc, int64_t dsc_stride, T* dbw,                 \
                            int64_t dbw_stride, int64_t threads) {                                  \
    PARALLEL_ROWS(n_out, NB_CASES(SUF, PACK_GRADS))                                                 \
  }

#define EXPAND(SUF, K)                                                                              \
  expand_uniform_##SUF##_##K(x + r0 * x_stride, x_stride, r1 - r0, width, inv_h, shift, n_knots,    \
                             coef, out + r0 * out_stride, out_stride)
#define GRAD(SUF, K)                                                                                \
  expand_grad_uniform_##SUF##_##K(x + r0 * x_stride, x_stride, r1 - r0, width, inv_h, shift,        \
                                  n_knots, coef, g + r0 * g_stride, g_stride, dx + r0 * dx_stride,  \
                                  dx_stride)
#define PACK(SUF, NB)                                                                               \
  pack_##SUF(sw + r0 * sw_stride, sw_stride, sc == NULL ? NULL : sc + r0 * sc_stride, sc_stride,    \
             bw + r0 * bw_stride, bw_stride, r1 - r0, width, NB, packed + r0 * width * (nb + 1))
#define PACK_GRADS(SUF, NB)                                                                         \
  pack_grads_##SUF(d + r0 * width * (nb + 1), sw + r0 * sw_stride, sw_stride,                       \
                   sc == NULL ? NULL : sc + r0 * sc_stride, sc_stride, r1 - r0, width, NB,          \
                   dsw == NULL ? NULL : dsw + r0 * dsw_stride, dsw_stride,                          \
                   dsc == NULL ? NULL : dsc + r0 * dsc_stride, dsc_stride,                          \
                   dbw == NULL ? NULL : dbw + r0 * dbw_stride, dbw_stride)

#define UNPACKED(SUF, NB)                                                                           \
  product_unpacked_##SUF(e, e_stride, n_rows, sw + r0 * sw_stride, sw_stride,                       \
                      sc == NULL ? NULL : sc + r0 * sc_stride, sc_stride, bw + r0 * bw_stride,      \
                      bw_stride, bias == NULL ? NULL : bias + r0, r1 - r0, width, NB, y + r0,       \
                      y_stride)

DEFINE_ALL(float, f32)
DEFINE_ALL(double, f64)
