/* clapp core — feature diagnostics of one block: dead channels and the
 * effective dimension of a layer's output.
 *
 * Over the valid steps of every lane of a block ([B, C, T] or [B, C, T, H, W];
 * each (t, h, w) position of a lane with t < len is one sample of the
 * C-vector):
 *   dead = fraction of channels that are dead: zero at every sample (ReLU
 *          outputs) or constant at every sample (other outputs);
 *   pr   = participation ratio of the channels' covariance C,
 *          (sum lambda)^2 / sum lambda^2 = tr(C)^2 / tr(C^2): C for isotropic
 *          features, 1 when one direction carries all the variance, 0 when
 *          nothing varies.
 * The covariance is accumulated in double with dsyrk over centred chunks of
 * samples (two passes: means, then C), in a workspace sized once for the
 * widest layer, so a block costs no allocation.
 */
#ifndef CLAPP_CORE_DIAG_H
#define CLAPP_CORE_DIAG_H

#include <stdint.h>

#include "clapp/plugin.h"

typedef struct clapp_diag_stats {
    double  dead;      /* fraction of dead channels, in [0, 1] */
    double  pr;        /* participation ratio, in [0, channels] */
    int64_t samples;   /* valid positions seen */
} clapp_diag_stats;

typedef struct clapp_diag {
    int64_t  max_channels;
    int64_t  chunk;     /* samples per dsyrk call */
    double  *cov;       /* [max_channels, max_channels], upper triangle used */
    double  *pack;      /* [max_channels, chunk]: centred samples, one row per channel */
    double  *mean;      /* [max_channels] */
    float   *lo, *hi;   /* [max_channels]: per-channel extremes */
} clapp_diag;

/* Workspace for outputs of up to max_channels channels. 0 or CLAPP_E_NOMEM. */
int  clapp_diag_init(clapp_diag *d, int64_t max_channels);
/* Statistics of the valid samples of blk; relu: dead means all zero (else:
 * constant). CLAPP_E_SHAPE if blk has more channels than the workspace. */
int  clapp_diag_compute(clapp_diag *d, const clapp_block *blk, int relu, clapp_diag_stats *st);
void clapp_diag_free(clapp_diag *d);

#endif
