/* Dead channels and participation ratio of a block's features. */
#include "learning/diag.h"

#include <cblas.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

/* Samples per dsyrk call: large enough for an efficient rank-k update, small
 * enough that the packed chunk stays a few MB for 512 channels. */
#define DIAG_CHUNK 512

int clapp_diag_init(clapp_diag *d, int64_t max_channels)
{
    const size_t c = (size_t)(max_channels > 0 ? max_channels : 1);
    memset(d, 0, sizeof *d);
    d->max_channels = (int64_t)c;
    d->chunk = DIAG_CHUNK;
    d->cov = malloc(c * c * sizeof *d->cov);
    d->pack = malloc(c * (size_t)d->chunk * sizeof *d->pack);
    d->mean = malloc(c * sizeof *d->mean);
    d->lo = malloc(c * sizeof *d->lo);
    d->hi = malloc(c * sizeof *d->hi);
    if (!d->cov || !d->pack || !d->mean || !d->lo || !d->hi) {
        clapp_diag_free(d);
        return CLAPP_E_NOMEM;
    }
    return CLAPP_OK;
}

void clapp_diag_free(clapp_diag *d)
{
    if (!d)
        return;
    free(d->cov);
    free(d->pack);
    free(d->mean);
    free(d->lo);
    free(d->hi);
    memset(d, 0, sizeof *d);
}

int clapp_diag_compute(clapp_diag *d, const clapp_block *blk, int relu, clapp_diag_stats *st)
{
    const clapp_tensor *x = &blk->x;
    const int64_t C = x->shape[1];
    int64_t T = x->shape[2], per_step = 1, row, n = 0, dead = 0;
    double tr = 0.0, tr2 = 0.0;

    memset(st, 0, sizeof *st);
    if (x->ndim < 3 || C > d->max_channels)
        return CLAPP_E_SHAPE;
    for (int32_t k = 3; k < x->ndim; k++)
        per_step *= x->shape[k];
    row = T * per_step;   /* one channel of one lane: T steps of H*W positions */

    /* Pass 1: per-channel sums (double) and extremes over the valid samples.
     * A lane's valid samples are the first len * H * W of each channel row. */
    for (int64_t c = 0; c < C; c++) {
        d->mean[c] = 0.0;
        d->lo[c] = INFINITY;
        d->hi[c] = -INFINITY;
    }
    for (int32_t b = 0; b < blk->lanes; b++) {
        const int64_t len = (blk->lane[b].len < T ? blk->lane[b].len : T) * per_step;
        for (int64_t c = 0; c < C && len > 0; c++) {
            const float *p = x->data + ((int64_t)b * C + c) * row;
            double s = 0.0;
            float lo = d->lo[c], hi = d->hi[c];
            for (int64_t i = 0; i < len; i++) {
                s += p[i];
                lo = p[i] < lo ? p[i] : lo;
                hi = p[i] > hi ? p[i] : hi;
            }
            d->mean[c] += s;
            d->lo[c] = lo;
            d->hi[c] = hi;
        }
        n += len > 0 ? len : 0;
    }
    st->samples = n;
    if (n == 0 || C == 0)
        return CLAPP_OK;
    for (int64_t c = 0; c < C; c++) {
        d->mean[c] /= (double)n;
        dead += relu ? (d->lo[c] == 0.0f && d->hi[c] == 0.0f) : (d->lo[c] == d->hi[c]);
    }
    st->dead = (double)dead / (double)C;

    /* Pass 2: cov = sum over samples of (x - mean)(x - mean)^T, by chunks.
     * The 1/(n-1) normalisation cancels in the ratio. */
    memset(d->cov, 0, (size_t)(C * C) * sizeof *d->cov);
    for (int32_t b = 0; b < blk->lanes; b++) {
        const int64_t len = (blk->lane[b].len < T ? blk->lane[b].len : T) * per_step;
        for (int64_t i0 = 0; i0 < len; i0 += d->chunk) {
            const int64_t k = len - i0 < d->chunk ? len - i0 : d->chunk;
            for (int64_t c = 0; c < C; c++) {
                const float *p = x->data + ((int64_t)b * C + c) * row + i0;
                double *q = d->pack + c * k;
                const double mu = d->mean[c];
                for (int64_t i = 0; i < k; i++)
                    q[i] = (double)p[i] - mu;
            }
            cblas_dsyrk(CblasRowMajor, CblasUpper, CblasNoTrans, (int)C, (int)k, 1.0, d->pack,
                        (int)k, 1.0, d->cov, (int)C);
        }
    }
    /* tr(C) and tr(C^2) = sum of squared entries (C is symmetric). */
    for (int64_t i = 0; i < C; i++) {
        const double *r = d->cov + i * C;
        tr += r[i];
        tr2 += r[i] * r[i];
        for (int64_t j = i + 1; j < C; j++)
            tr2 += 2.0 * r[j] * r[j];
    }
    st->pr = tr2 > 0.0 ? tr * tr / tr2 : 0.0;
    return CLAPP_OK;
}
