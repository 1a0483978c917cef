/* clapp core — the contrastive loss element `clapp` (docs/ALGORITHMS.md §1, §2, §4.3).
 *
 * For a context stream c [B, Dc, T] and a target stream z [B, Dz, T] (the same
 * tensor unless target= names another element), with one prediction matrix
 * W_k (Dz x Dc) per step k = 1..K, scores u = z^T W_k c. Valid pairs lie
 * inside one lane's valid steps of one block (no padding, no pairs across
 * blocks). The loss element computes the loss and its gradient with respect
 * to z, c and W (and W_retro) and nothing else: the host hands grad_z/grad_c
 * to the module's layers.
 */
#ifndef CLAPP_CORE_LOSS_H
#define CLAPP_CORE_LOSS_H

#include <stdint.h>

#include "clapp/plugin.h"

typedef enum clapp_loss_mode {
    CLAPP_LOSS_CLAPP_S = 0,   /* hinge, positive and N negative terms every step (synchronous) */
    CLAPP_LOSS_CLAPP = 1,     /* hinge, each lane positive or negative per forward (p = 0.5, shared over k),
                                 1 negative: lane r(b) (uniform; may equal b unless
                                 neg_exclude_self) at the target time, drawn per k */
    CLAPP_LOSS_HINGE_CPC = 2, /* hinge with CLAPP-s sampling; meant for one module at the top (end to end) */
    CLAPP_LOSS_INFONCE = 3,   /* CPC/GIM: -log softmax over {u_pos, u_neg_1..N}, target index 0 */
} clapp_loss_mode;

/* How the N negatives of a context are drawn (CLAPP-s, hinge-CPC, InfoNCE). */
typedef enum clapp_loss_neg_draw {
    CLAPP_LOSS_NEG_PER_STEP = 0, /* fresh N per (context, k): the reference codes (GIM, vision) */
    CLAPP_LOSS_NEG_SHARED = 1,   /* one N per context for all k (loss version 1's only form) */
} clapp_loss_neg_draw;

/* Behaviour version of the loss element, recorded in checkpoints. 1: negatives
 * shared over k, grad_target true in every mode; 2: the reference defaults
 * (per-step negatives, grad_target per mode). */
#define CLAPP_LOSS_VERSION 2

typedef struct clapp_loss_params {
    clapp_loss_mode mode;
    int32_t  steps;           /* K, default 12 */
    int32_t  negatives;       /* N, default 10 (CLAPP mode always uses 1) */
    int32_t  window;          /* positives window W (GIM subsampling), default 128; 0 = all steps */
    int      retro;           /* independent W_retro for the context path (appendix C) */
    int      detach_context;  /* u = z^T W block(c): no gradient to c */
    int      grad_target;     /* with a separate target stream: also give grad_z (appendix B.2);
                                 see clapp_loss_default_grad_target for the element's default */
    clapp_loss_neg_draw neg_draw;   /* default per step */
    int      neg_exclude_self; /* CLAPP mode: r(b) is never b (default 0: uniform over all lanes) */
    uint64_t seed;
} clapp_loss_params;

void clapp_loss_default_params(clapp_loss_params *p);

/* The reference's grad_target (the `clapp` element's grad_target=auto): 1
 * for CLAPP-s and CLAPP (the appendix updates z and c at the GRU level); for
 * InfoNCE and hinge-CPC 0 when the target is in another module (GIM detaches
 * the GRU's input) and 1 when it is inside the context's module (CPC end to
 * end back-propagates through the targets too). */
int  clapp_loss_default_grad_target(clapp_loss_mode mode, int target_in_module);

/* Per-call results. pos_active / neg_active count terms over both halves;
 * they are 0 for InfoNCE. */
typedef struct clapp_loss_stats {
    double  loss;            /* value of the layer loss (mean over k; pred + retro halves summed) */
    double  loss_retro;      /* the retro half alone (0 without retro) */
    int64_t pairs;           /* positive pairs used, summed over k */
    double  pos_active;      /* fraction of positive terms inside the margin (hinge modes) */
    double  neg_active;      /* fraction of negative terms inside the margin (hinge modes) */
} clapp_loss_stats;

typedef struct clapp_loss clapp_loss;

/* dz, dc: feature sizes of z and c (for video: C*H*W per time step, W_k shared
 * across spatial positions is a later extension). t_cap: block time capacity.
 * W_k initialised U(±1/sqrt(dc)) from p->seed (PyTorch Linear default),
 * W_retro_k U(±1/sqrt(dz)) (it maps z to c space). Everything compute needs
 * is allocated here (about 2 B t_cap Dz + 2 B W (K Dz + Dc) floats). */
int  clapp_loss_create(clapp_loss **loss, const clapp_loss_params *p, int64_t dz, int64_t dc,
                       int32_t lanes, int64_t t_cap, const clapp_host *host, const char *name);

/* Compute the loss on one block. z and c are blocks of the same lanes and
 * time axis (c == z allowed: the same pointer, or the same data, means the
 * same stream). Pairs use len = min(z len, c len) per lane; lanes with len 0
 * are ignored; a call without any pair returns 0 with stats.pairs = 0.
 *
 * Gradient routing (all ADDED, only at valid steps; W grads ACCUMULATED into
 * the tensors listed by clapp_loss_tensors, so zero them per step):
 * - c == z: pass grad_c == grad_z (or one of them NULL); the z path (Eq. 6
 *   form) and the c path (Eq. 7 form) go into that one tensor.
 * - separate streams: grad_c gets the c path; grad_z gets the z path only
 *   when params.grad_target is set (it is ignored otherwise).
 * - detach_context: no c path at all (u = z^T W block(c)).
 * - retro: the pred half u = z^T W block(c) gives the z path and W.grad; the
 *   retro half u = block(z)^T W_retro^T c, i.e. c . (W_retro z), with its
 *   own draws and gates, gives the c path and W_retro.grad. loss = sum.
 * Errors: CLAPP_E_SHAPE (feature sizes, lanes or T beyond the capacity, z/c
 * axes differ, gradient size), CLAPP_E_INVAL (a lane len outside [0, T]). */
int  clapp_loss_compute(clapp_loss *loss, const clapp_block *z, const clapp_block *c,
                        clapp_tensor *grad_z, clapp_tensor *grad_c, clapp_loss_stats *st);

/* The random draws of the last clapp_loss_compute, for tests and debugging
 * (read-only views into the loss; valid until the next compute or destroy).
 *
 * Window: w0 is drawn uniformly in [0, min over lanes longer than W of
 * (len - W)] (0 when no lane is longer); a lane longer than W uses
 * [w0, w0 + W), a lane with len <= W uses [0, len) (len = min of the z and c
 * lane lengths).
 * Pair enumeration, shared by every mode: for step k = 1..K (index kk = k-1),
 * lanes b = 0..B-1 in order, context t = lo[b] .. hi[b]-k-1, target t+k;
 * pair_off[kk] is the number of pairs of the steps before k (P_k =
 * pair_off[kk+1] - pair_off[kk]).
 * Contexts: the steps t = lo[b] .. hi[b]-2 of each lane, numbered lane by lane
 * from ctx_off[b]; contexts = their count.
 * Pool: every valid step (b, t < len_b of z) has the index pool_off[b] + t;
 * negatives are pool indices, drawn uniformly with replacement (they may hit
 * the positive itself). Per step (neg_draw per_step), every pair has its own
 * N: pair i of step k (counted from pair_off[kk] in the order above) uses
 * neg[h][(pair_off[kk] + i) * N + n]; shared, context row r has N for all k:
 * neg[h][r * N + n]. n_neg is the number of entries of neg[h].
 * Halves: h = 0 is the pred half (or the only one), h = 1 the retro half,
 * which redraws everything independently. */
typedef struct clapp_loss_draws {
    int32_t        lanes;
    int32_t        steps;         /* K */
    int32_t        negatives;     /* N per pair (1 in CLAPP mode) */
    int32_t        w0;            /* window start of this call */
    const int32_t *lo, *hi;       /* [lanes] positive range: t and t+k in [lo, hi) */
    const int64_t *pool_off;      /* [lanes + 1] */
    const int64_t *pair_off;      /* [K + 1] */
    int64_t        contexts;
    const int64_t *ctx_off;       /* [lanes] */
    int            per_step;      /* negatives drawn per (pair, k) rather than per context */
    int64_t        n_neg;         /* entries of neg[h]: pairs * N (per step) or contexts * N */
    const int32_t *neg[2];        /* CLAPP-s/hinge-CPC/InfoNCE: see Pool above */
    const uint8_t *lane_pos[2];   /* CLAPP: [lanes] 1 = this lane is positive in this call */
    const int32_t *lane_r[2];     /* CLAPP: [K * lanes] r(b) for step kk at lane_r[h][kk * lanes + b],
                                     uniform over the lanes with len > 0 (may equal b; with
                                     neg_exclude_self over the others, -1 when there is none:
                                     no negative term for that lane and step) */
} clapp_loss_draws;

int  clapp_loss_last_draws(const clapp_loss *loss, clapp_loss_draws *d);

/* Change the parameters that need no new buffers: neg_draw from per_step to
 * shared (not back), grad_target, neg_exclude_self. Checkpoints of loss
 * version 1 use it to restore the old behaviour. CLAPP_E_INVAL otherwise. */
int  clapp_loss_update_params(clapp_loss *loss, const clapp_loss_params *p);

/* Parameters: "W" [K, Dz, Dc] (and "W_retro" [K, Dc, Dz]) with gradients. */
int  clapp_loss_tensors(clapp_loss *loss, const clapp_named_tensor **list, int32_t *count);

/* The PRNG state (xoshiro256**, 4 words), for checkpoints: restoring it
 * makes the next computes draw exactly what an uninterrupted run draws. */
void clapp_loss_get_rng(const clapp_loss *loss, uint64_t state[4]);
void clapp_loss_set_rng(clapp_loss *loss, const uint64_t state[4]);

void clapp_loss_destroy(clapp_loss *loss);

#endif
