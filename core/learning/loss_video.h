/* clapp core — the video form of the contrastive loss element `clapp`
 * (docs/ALGORITHMS.md §5.3, the authors' video code).
 *
 * For a context stream c [B, Cc, T, H, W] and a target stream z
 * [B, Cz, T, H, W] (the same tensor unless target= names another element),
 * one prediction matrix W_k (Cz x Cc) per step k = 1..K is SHARED across the
 * H x W positions (a 1x1x1 convolution): the score of context (b, t) and
 * target (b', t') is
 *
 *     s = sum_{x,y} z[b', :, t', y, x]^T W_k c[b, :, t, y, x].
 *
 * Pairs: the contexts of lane b are its steps t = 0 .. len_b - K - 1 (as the
 * reference code: one context set shared by every k, len_b = min of the z
 * and c lane lengths; a lane with len_b <= K gives none); the positive of
 * context (b, t) at step k is (b, t + k). With N contexts in the block, step
 * k forms the N x N score matrix S_k (rows contexts, columns their step-k
 * targets): the diagonal holds the positives, every off-diagonal entry is a
 * negative (other clips and other times). No random draws.
 *
 *   hinge (mode clapp-s or hinge-cpc, synchronous):
 *     L_k = 1/2 (mean_i max(0, 1 - s_ii) + mean_{i != j} max(0, 1 + s_ij))
 *     (with N = 1 the negative mean is empty and dropped);
 *   infonce:  L_k = mean_i [ -log softmax_j(s_ij) at j = i ];
 *   layer loss L = mean over k.
 * mode=clapp (the 50/50 saccade variant) and retro have no video form here:
 * the paper's video "CLAPP" is synchronous with symmetric W; create refuses
 * them.
 *
 * Work is GEMM-shaped: every valid step is transposed to a position-major
 * row [H*W, C] (channels innermost), so W_k applied to all contexts at all
 * positions is one [N*H*W x Cc] x [Cc x Cz] GEMM, S_k one
 * [N x H*W*Cz] x [H*W*Cz x N] GEMM, and the backward the matching GEMMs.
 *
 * Pooled form (pool = P >= 1, or pool = frame; CLAPP++ spatial dependence):
 * z and c are first averaged over non-overlapping P x P windows (Gh =
 * ceil(H/P) rows, Gw = ceil(W/P) columns of windows, G = Gh Gw; an edge
 * window cut by the border averages the pixels it covers; pool=frame is one
 * window of the whole H x W frame, G = 1). Each step becomes one vector
 * zp [Cz*G], cp [Cc*G], flattened channel-major (index ch*G + gy*Gw + gx,
 * as torch's flatten of [C, Gh, Gw]), and W_k is a FULL matrix
 * [Cz*G, Cc*G] that couples every channel of every window with every other:
 *
 *     s = zp[b', t']^T W_k cp[b, t],
 *
 * with the same pairs and losses as above. W holds K (Cz G)(Cc G) floats
 * (its gradient and Adam's two moments as much again, three times), so create
 * refuses a pool whose W exceeds CLAPP_LOSS_VIDEO_MAX_W_FLOATS. pool = 1 keeps
 * every position (G = H*W) with a full W; with W_k = W_shared (x) I_G (block-
 * diagonal in position-major order) it equals the shared form exactly. The
 * pooled form runs the same GEMMs with one "position" of Cz*G / Cc*G
 * channels; the pooling and its adjoint (each pixel gets its window's
 * gradient / window size) surround them.
 */
#ifndef CLAPP_CORE_LOSS_VIDEO_H
#define CLAPP_CORE_LOSS_VIDEO_H

#include <stddef.h>
#include <stdint.h>

#include "clapp/plugin.h"
#include "learning/loss.h"

typedef struct clapp_loss_video clapp_loss_video;

/* pool values: the default shared form (W_k Cz x Cc shared over positions,
 * no pooling), the whole-frame average, or a window size P >= 1. */
#define CLAPP_LOSS_VIDEO_POOL_SHARED (-1)
#define CLAPP_LOSS_VIDEO_POOL_FRAME 0
/* The largest W of the pooled form: K (Cz G)(Cc G) <= 2^26 floats (256 MiB;
 * with its gradient and Adam's moments the element then holds 1 GiB). */
#define CLAPP_LOSS_VIDEO_MAX_W_FLOATS ((int64_t)1 << 26)

/* Parse a `pool=` value: "shared" (or empty) -> POOL_SHARED, "frame" or "0"
 * -> POOL_FRAME, a decimal P >= 1 -> P. Then check the size of W for that
 * pool on maps of cz/cc channels and h x w positions with K = steps (pass
 * h = w = 0 to skip the size check). Returns 0, or CLAPP_E_INVAL with the
 * reason in why (naming pool= and the size). */
int  clapp_loss_video_pool_check(const char *text, int32_t steps, int64_t cz, int64_t cc,
                                 int64_t h, int64_t w, int64_t *pool, char *why, size_t whylen);

/* cz, cc: channels of z and c; h, w: their common spatial size. t_cap: block
 * time capacity. Uses p->mode (clapp-s / hinge-cpc: hinge; infonce),
 * p->steps (K), p->detach_context, p->grad_target, p->seed (W init only);
 * negatives and window do not apply (all pairs of the block are used).
 * W_k initialised U(±1/sqrt(cc)) (PyTorch Conv3d 1x1x1 default). Work
 * buffers (about 4 B t_cap h w (cz + cc) floats) are allocated here. */
int  clapp_loss_video_create(clapp_loss_video **loss, const clapp_loss_params *p, int64_t cz,
                             int64_t cc, int64_t h, int64_t w, int32_t lanes, int64_t t_cap,
                             const clapp_host *host, const char *name);

/* The same with a pool (CLAPP_LOSS_VIDEO_POOL_SHARED gives create's form).
 * Pooled: W [K, Cz*G, Cc*G] initialised U(±1/sqrt(Cc G)); work buffers about
 * 4 B t_cap G (cz + cc) floats. */
int  clapp_loss_video_create_pool(clapp_loss_video **loss, const clapp_loss_params *p,
                                  int64_t pool, int64_t cz, int64_t cc, int64_t h, int64_t w,
                                  int32_t lanes, int64_t t_cap, const clapp_host *host,
                                  const char *name);

/* One block; the same contract as clapp_loss_compute (loss.h): gradients are
 * ADDED into grad_z / grad_c at valid steps (grad_c == grad_z allowed when
 * c is z), W's gradient is ACCUMULATED. detach_context: no c path. Separate
 * streams: grad_z only with p->grad_target. stats.pairs = N * K;
 * pos_active / neg_active: hinge terms inside the margin (0 for infonce). */
int  clapp_loss_video_compute(clapp_loss_video *loss, const clapp_block *z, const clapp_block *c,
                              clapp_tensor *grad_z, clapp_tensor *grad_c, clapp_loss_stats *st);

/* "W" [K, Cz, Cc] (pooled: [K, Cz*G, Cc*G]) with its gradient. */
int  clapp_loss_video_tensors(clapp_loss_video *loss, const clapp_named_tensor **list,
                              int32_t *count);

/* Multiply-adds of the last compute (GEMMs only), for benchmarks. */
double clapp_loss_video_last_flops(const clapp_loss_video *loss);

void clapp_loss_video_destroy(clapp_loss_video *loss);

#endif
