/* Audio augmentation for the source element: speed, equalisation, gain and
 * noise per sequence, drawn from (seed, seq_id). See augment.h. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "media/augment.h"
#include "clapp/plugin.h"
#include "clapp/plugin_util.h"

#ifndef M_PI
#define M_PI 3.14159265358979323846
#endif

/* Resampling kernel: a Kaiser-windowed sinc of KZ zero crossings each side,
 * tabulated at KP points per zero crossing (linear interpolation between). */
#define KZ 16
#define KP 512
#define KAISER_BETA 8.6
/* Decoded samples pulled at a time into the resampler. */
#define CHUNK 1024
/* The largest speed parameter accepted. */
#define SPEED_MAX 4.0

/* Salts: each option draws from its own stream. */
#define SALT_GAIN  0x6761696e5f616775ull
#define SALT_NOISE 0x6e6f6973655f6175ull
#define SALT_EQ    0x65715f6175675f5full
#define SALT_SPEED 0x73706565645f6175ull

typedef struct aug_lane {
    clapp_aug_draw d;
    double   eq_z[CLAPP_AUG_MAX_EQ][2];  /* transposed direct form II state */
    uint64_t rng;                        /* noise */
    double   spare;                      /* Box-Muller's second value */
    int      has_spare;
    double   pink[7];
    double   sig_sum;                    /* power of the sequence so far */
    int64_t  sig_n;
    float   *ring;                       /* resampler input history */
    int64_t  in_hi;                      /* input steps consumed */
    int64_t  out_j;                      /* next output step (resampler) */
    int      in_eof;
} aug_lane;

struct clapp_aug {
    double            gain_db, eq_db, speed, snr_lo, snr_hi;
    int               noise_on;
    clapp_noise_color noise;
    int               rate;
    int64_t           block;
    int32_t           lanes;
    aug_lane         *lane;
    float            *kernel;      /* [KZ*KP + 2], kernel(x) at x = i/KP */
    float            *scratch;     /* [CHUNK] */
    float            *noise_buf;   /* [block] */
    int64_t           ring_mask;
};

/* Uniform in [0, 1). */
static double uniform(uint64_t *s) { return clapp_uniform53(s); }

/* The state of one option's stream for one sequence. */
static uint64_t stream_for(uint64_t seed, int64_t seq_id, uint64_t salt)
{
    uint64_t s = seed ^ salt;
    uint64_t a = clapp_splitmix64(&s);
    s = a ^ ((uint64_t)seq_id * 0xD1B54A32D192ED03ull);
    return clapp_splitmix64(&s);
}

static double log_uniform(uint64_t *s, double lo, double hi)
{
    return exp(log(lo) + uniform(s) * (log(hi) - log(lo)));
}

/* RBJ audio-EQ-cookbook biquads, normalised to a0 = 1; shelves of slope 1. */
static clapp_biquad design_biquad(clapp_eq_type type, double freq, double gain_db, double q,
                                  double rate)
{
    const double A = pow(10.0, gain_db / 40.0), w0 = 2.0 * M_PI * freq / rate;
    const double cw = cos(w0), sw = sin(w0);
    double b0, b1, b2, a0, a1, a2;
    clapp_biquad bq;
    if (type == CLAPP_EQ_PEAK) {
        double alpha = sw / (2.0 * q);
        b0 = 1.0 + alpha * A;
        b1 = -2.0 * cw;
        b2 = 1.0 - alpha * A;
        a0 = 1.0 + alpha / A;
        a1 = -2.0 * cw;
        a2 = 1.0 - alpha / A;
    } else {
        double k = 2.0 * sqrt(A) * (sw / 2.0 * sqrt(2.0));   /* 2 sqrt(A) alpha at S = 1 */
        double s = type == CLAPP_EQ_LOW_SHELF ? 1.0 : -1.0;   /* the high shelf mirrors cos */
        b0 = A * ((A + 1) - s * (A - 1) * cw + k);
        b1 = s * 2.0 * A * ((A - 1) - s * (A + 1) * cw);
        b2 = A * ((A + 1) - s * (A - 1) * cw - k);
        a0 = (A + 1) + s * (A - 1) * cw + k;
        a1 = -s * 2.0 * ((A - 1) + s * (A + 1) * cw);
        a2 = (A + 1) + s * (A - 1) * cw - k;
    }
    bq.b0 = b0 / a0;
    bq.b1 = b1 / a0;
    bq.b2 = b2 / a0;
    bq.a1 = a1 / a0;
    bq.a2 = a2 / a0;
    return bq;
}

int clapp_aug_params_active(const clapp_aug_params *p)
{
    return p->gain_db != 0 || (p->snr && p->snr[0]) || p->eq_db != 0 ||
           (p->speed != 0 && p->speed != 1);
}

/* "LO:HI" or "X" in dB. */
static int parse_snr(const char *text, double *lo, double *hi)
{
    char *end;
    *lo = strtod(text, &end);
    if (end == text)
        return -1;
    if (*end == ':') {
        const char *h = end + 1;
        *hi = strtod(h, &end);
        if (end == h)
            return -1;
    } else {
        *hi = *lo;
    }
    while (*end == ' ')
        end++;
    return *end || !isfinite(*lo) || !isfinite(*hi) ? -1 : 0;
}

static double bessel_i0(double x)
{
    double sum = 1.0, term = 1.0;
    for (int k = 1; k < 60; k++) {
        term *= (x / (2.0 * k)) * (x / (2.0 * k));
        sum += term;
        if (term < 1e-17 * sum)
            break;
    }
    return sum;
}

int clapp_aug_create(clapp_aug **out, const clapp_aug_params *p, int rate, int64_t block,
                     int32_t lanes, char *why, size_t whylen)
{
    clapp_aug *a;
    double lo = 0, hi = 0;
    int noise_on = p->snr && p->snr[0];

    *out = NULL;
    if (!(p->gain_db >= 0 && p->gain_db <= 100)) {
        snprintf(why, whylen, "aug_gain_db=%g: must be in [0, 100] dB (0: off)", p->gain_db);
        return CLAPP_E_INVAL;
    }
    if (!(p->eq_db >= 0 && p->eq_db <= 40)) {
        snprintf(why, whylen, "aug_eq_db=%g: must be in [0, 40] dB (0: off)", p->eq_db);
        return CLAPP_E_INVAL;
    }
    if (!(p->speed == 0 || (p->speed >= 1 && p->speed <= SPEED_MAX))) {
        snprintf(why, whylen, "aug_speed=%g: must be in [1, %g] (factors in [1/s, s]; 1: off)",
                 p->speed, SPEED_MAX);
        return CLAPP_E_INVAL;
    }
    if (noise_on && parse_snr(p->snr, &lo, &hi) < 0) {
        snprintf(why, whylen, "aug_snr=%s: expected LO:HI (or one value) in dB, e.g. 5:20 "
                 "(empty: off)", p->snr);
        return CLAPP_E_INVAL;
    }
    if (noise_on && lo > hi) {
        snprintf(why, whylen, "aug_snr=%s: LO must not exceed HI", p->snr);
        return CLAPP_E_INVAL;
    }
    if (noise_on && (p->noise < CLAPP_NOISE_WHITE || p->noise > CLAPP_NOISE_EITHER)) {
        snprintf(why, whylen, "aug_noise: unknown colour %d", (int)p->noise);
        return CLAPP_E_INVAL;
    }
    if (!clapp_aug_params_active(p))
        return 0;
    if (rate < 1 || block < 1 || lanes < 1) {
        snprintf(why, whylen, "augmentation needs a rate, block and lanes >= 1");
        return CLAPP_E_INVAL;
    }

    a = calloc(1, sizeof *a);
    if (!a)
        goto nomem;
    a->gain_db = p->gain_db;
    a->eq_db = p->eq_db;
    a->speed = p->speed == 0 ? 1.0 : p->speed;
    a->noise_on = noise_on;
    a->noise = p->noise;
    a->snr_lo = lo;
    a->snr_hi = hi;
    a->rate = rate;
    a->block = block;
    a->lanes = lanes;
    a->lane = calloc((size_t)lanes, sizeof *a->lane);
    if (!a->lane)
        goto nomem;
    if (a->noise_on) {
        a->noise_buf = malloc((size_t)block * sizeof *a->noise_buf);
        if (!a->noise_buf)
            goto nomem;
    }
    if (a->speed != 1.0) {
        /* The ring holds every input sample the kernel reaches from the
         * current output step, plus one pulled chunk. */
        int64_t reach = (int64_t)ceil(KZ * a->speed) + 2, ring = 1;
        while (ring < 2 * reach + CHUNK + 2)
            ring *= 2;
        a->ring_mask = ring - 1;
        a->kernel = malloc((KZ * KP + 2) * sizeof *a->kernel);
        a->scratch = malloc(CHUNK * sizeof *a->scratch);
        if (!a->kernel || !a->scratch)
            goto nomem;
        for (int i = 0; i <= KZ * KP; i++) {
            double x = (double)i / KP, r = x / KZ;
            double sinc = i == 0 ? 1.0 : sin(M_PI * x) / (M_PI * x);
            double w = bessel_i0(KAISER_BETA * sqrt(fmax(0.0, 1.0 - r * r))) /
                       bessel_i0(KAISER_BETA);
            a->kernel[i] = (float)(sinc * w);
        }
        a->kernel[KZ * KP] = 0.0f;   /* the window's edge */
        a->kernel[KZ * KP + 1] = 0.0f;
        for (int32_t b = 0; b < lanes; b++) {
            a->lane[b].ring = calloc((size_t)ring, sizeof(float));
            if (!a->lane[b].ring)
                goto nomem;
        }
    }
    *out = a;
    return 0;
nomem:
    clapp_aug_destroy(a);
    snprintf(why, whylen, "out of memory setting up the augmentation");
    return CLAPP_E_NOMEM;
}

void clapp_aug_destroy(clapp_aug *a)
{
    if (!a)
        return;
    if (a->lane)
        for (int32_t b = 0; b < a->lanes; b++)
            free(a->lane[b].ring);
    free(a->lane);
    free(a->kernel);
    free(a->scratch);
    free(a->noise_buf);
    free(a);
}

void clapp_aug_draw_seq(const clapp_aug *a, uint64_t seed, int64_t seq_id, clapp_aug_draw *d)
{
    uint64_t s;
    memset(d, 0, sizeof *d);
    d->gain = 1.0;
    d->speed = 1.0;
    if (!a)
        return;
    if (a->gain_db > 0) {
        s = stream_for(seed, seq_id, SALT_GAIN);
        d->gain_db = a->gain_db * (2.0 * uniform(&s) - 1.0);
        d->gain = pow(10.0, d->gain_db / 20.0);
    }
    if (a->noise_on) {
        s = stream_for(seed, seq_id, SALT_NOISE);
        d->noise = 1;
        d->snr_db = a->snr_lo + (a->snr_hi - a->snr_lo) * uniform(&s);
        d->pink = a->noise == CLAPP_NOISE_PINK ||
                  (a->noise == CLAPP_NOISE_EITHER && uniform(&s) < 0.5);
        d->noise_seed = clapp_splitmix64(&s);
    }
    if (a->eq_db > 0) {
        /* Centre frequencies up to 0.4 rate, from 50 Hz (lower at very low rates). */
        const double fhi = 0.4 * a->rate, flo = fmin(50.0, 0.1 * a->rate);
        s = stream_for(seed, seq_id, SALT_EQ);
        d->n_eq = 1 + (int)(uniform(&s) * CLAPP_AUG_MAX_EQ);
        for (int k = 0; k < d->n_eq; k++) {
            d->eq_type[k] = (clapp_eq_type)(int)(uniform(&s) * 3);
            d->eq_freq[k] = log_uniform(&s, flo, fhi);
            d->eq_gain_db[k] = a->eq_db * (2.0 * uniform(&s) - 1.0);
            d->eq_q[k] = d->eq_type[k] == CLAPP_EQ_PEAK ? log_uniform(&s, 0.5, 2.0) : 0.0;
            d->eq[k] = design_biquad(d->eq_type[k], d->eq_freq[k], d->eq_gain_db[k], d->eq_q[k],
                                     a->rate);
        }
    }
    if (a->speed != 1.0) {
        s = stream_for(seed, seq_id, SALT_SPEED);
        d->speed = exp(log(a->speed) * (2.0 * uniform(&s) - 1.0));
    }
}

void clapp_aug_begin(clapp_aug *a, int32_t lane, uint64_t seed, int64_t seq_id)
{
    aug_lane *l = &a->lane[lane];
    float *ring = l->ring;
    memset(l, 0, sizeof *l);
    l->ring = ring;
    clapp_aug_draw_seq(a, seed, seq_id, &l->d);
    l->rng = l->d.noise_seed;
}

int64_t clapp_aug_out_len(int64_t n_in, double f)
{
    int64_t m;
    if (n_in <= 0)
        return 0;
    m = (int64_t)ceil((double)n_in / f);
    while (m > 0 && (double)(m - 1) * f >= (double)n_in)
        m--;
    while ((double)m * f < (double)n_in)
        m++;
    return m;
}

/* Output step j of the resampler: input time t = j*f, taps k with
 * |t - k| < KZ/c, kernel c * h(c (t - k)), c = min(1, 1/f). The caller has
 * pulled every input sample up to t + KZ/c (or the end). */
static float resample_at(const clapp_aug *a, const aug_lane *l, double t)
{
    const double f = l->d.speed, c = f > 1.0 ? 1.0 / f : 1.0, reach = KZ / c;
    int64_t k0 = (int64_t)floor(t - reach) + 1, k1 = (int64_t)floor(t + reach);
    double sum = 0.0;
    if (k0 < 0)
        k0 = 0;
    if (k1 > l->in_hi - 1)
        k1 = l->in_hi - 1;   /* past the end: zeros */
    for (int64_t k = k0; k <= k1; k++) {
        double u = fabs(t - (double)k) * c * KP;
        int64_t i = (int64_t)u;
        double w;
        if (i >= KZ * KP)
            continue;
        w = a->kernel[i] + (u - (double)i) * (a->kernel[i + 1] - a->kernel[i]);
        sum += w * l->ring[k & a->ring_mask];
    }
    return (float)(sum * c);
}

static int64_t resample_read(clapp_aug *a, aug_lane *l, clapp_aug_pull pull, void *ctx,
                             float *dst, int64_t want, int *eof, int *error)
{
    const double f = l->d.speed, reach = KZ * (f > 1.0 ? f : 1.0);
    int64_t n = 0;
    while (n < want) {
        double t = (double)l->out_j * f;
        int64_t need = (int64_t)floor(t + reach);   /* the last input sample step j reaches */
        while (!l->in_eof && l->in_hi <= need) {
            int e = 0, er = 0;
            int64_t r = pull(ctx, a->scratch, CHUNK, &e, &er);
            for (int64_t i = 0; i < r; i++)
                l->ring[(l->in_hi + i) & a->ring_mask] = a->scratch[i];
            l->in_hi += r;
            if (er) {
                *error = 1;
                return n;
            }
            if (e)
                l->in_eof = 1;
        }
        if (l->in_eof && t >= (double)l->in_hi) {
            *eof = 1;
            break;
        }
        dst[n++] = resample_at(a, l, t);
        l->out_j++;
    }
    return n;
}

int64_t clapp_aug_read(clapp_aug *a, int32_t lane, clapp_aug_pull pull, void *ctx, float *dst,
                       int64_t want, int *eof, int *error)
{
    aug_lane *l = &a->lane[lane];
    const clapp_aug_draw *d = &l->d;
    int64_t n;
    if (d->speed != 1.0) {
        n = resample_read(a, l, pull, ctx, dst, want, eof, error);
    } else {
        n = pull(ctx, dst, want, eof, error);
        l->in_hi += n;
    }
    if (d->n_eq > 0 || d->gain != 1.0) {
        for (int64_t i = 0; i < n; i++) {
            double y = dst[i];
            for (int k = 0; k < d->n_eq; k++) {
                const clapp_biquad *q = &d->eq[k];
                double *z = l->eq_z[k], x = y;
                y = q->b0 * x + z[0];
                z[0] = q->b1 * x - q->a1 * y + z[1];
                z[1] = q->b2 * x - q->a2 * y;
            }
            dst[i] = (float)(y * d->gain);
        }
    }
    return n;
}

static double gaussian(aug_lane *l)
{
    double u1, u2, r;
    if (l->has_spare) {
        l->has_spare = 0;
        return l->spare;
    }
    u1 = 1.0 - uniform(&l->rng);   /* (0, 1]: log is finite */
    u2 = uniform(&l->rng);
    r = sqrt(-2.0 * log(u1));
    l->spare = r * sin(2.0 * M_PI * u2);
    l->has_spare = 1;
    return r * cos(2.0 * M_PI * u2);
}

/* Pink (1/f) noise from white: a sum of first-order low-passes spread over
 * the octaves (Paul Kellet's published "refined" coefficients). */
static double pink_step(double *p, double w)
{
    double out;
    p[0] = 0.99886 * p[0] + w * 0.0555179;
    p[1] = 0.99332 * p[1] + w * 0.0750759;
    p[2] = 0.96900 * p[2] + w * 0.1538520;
    p[3] = 0.86650 * p[3] + w * 0.3104856;
    p[4] = 0.55000 * p[4] + w * 0.5329522;
    p[5] = -0.7616 * p[5] - w * 0.0168980;
    out = p[0] + p[1] + p[2] + p[3] + p[4] + p[5] + p[6] + w * 0.5362;
    p[6] = w * 0.115926;
    return out;
}

void clapp_aug_add_noise(clapp_aug *a, int32_t lane, float *x, int64_t n)
{
    aug_lane *l = &a->lane[lane];
    double pn = 0.0, ps, scale;
    if (!l->d.noise || n <= 0)
        return;
    if (n > a->block)
        n = a->block;   /* cannot happen: runs are at most one block */
    for (int64_t i = 0; i < n; i++) {
        double w = gaussian(l);
        if (l->d.pink)
            w = pink_step(l->pink, w);
        a->noise_buf[i] = (float)w;
        pn += (double)a->noise_buf[i] * a->noise_buf[i];
        l->sig_sum += (double)x[i] * x[i];
    }
    l->sig_n += n;
    ps = l->sig_sum / (double)l->sig_n;
    pn /= (double)n;
    if (!(pn > 0) || !(ps > 0))
        return;
    scale = sqrt(ps / (pn * pow(10.0, l->d.snr_db / 10.0)));
    for (int64_t i = 0; i < n; i++)
        x[i] += (float)(scale * a->noise_buf[i]);
}

int64_t clapp_aug_input_steps(const clapp_aug *a, int32_t lane)
{
    return a->lane[lane].in_hi;
}

double clapp_aug_speed(const clapp_aug *a, int32_t lane)
{
    return a->lane[lane].d.speed;
}
