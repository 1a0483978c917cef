/* clapp core — audio augmentation for the source element.
 *
 * Encoders trained on synthetic voices learn the synthesiser's easy cues
 * (exact level, clean spectrum, fixed tempo); these perturbations make such
 * cues useless. Each is off by default. Per sequence (a file in stream mode,
 * a window in window mode) the source draws:
 *
 *   speed  f, log-uniform in [1/s, s]: the sequence is resampled so that
 *          output step i is input time i*f (duration scales by 1/f, pitch by
 *          f; a windowed-sinc resampler, low-passed at min(1, 1/f) of
 *          Nyquist). Frame labels follow: frame i takes the label at input
 *          time (i + 0.5) * f / label_rate.
 *   eq     1-3 biquads (peaking, low or high shelf; RBJ cookbook), centre
 *          frequency log-uniform in [50 Hz, 0.4 rate], gain uniform in
 *          [-D, D] dB, peaking Q log-uniform in [0.5, 2], shelf slope 1;
 *          state carried across blocks.
 *   gain   uniform in [-G, G] dB (a log-uniform factor).
 *   noise  white or pink Gaussian noise at an SNR uniform in [LO, HI] dB:
 *          each delivered run of a sequence (its part of one block) gets
 *          noise scaled, by its own realised power, to the SNR relative to
 *          the mean power of the sequence so far (through this run): the
 *          window's power in window mode, the file's running power in stream
 *          mode (exactly the file's power when the file fits one block).
 *          A silent (all-zero) sequence gets no noise.
 *
 * Applied in that order, after decoding and before the source's gain/offset
 * normalisation. Every draw is a pure function of (seed, seq_id), seq_id =
 * entry + epoch * entries, each option from its own stream (turning one on
 * does not change another's draws), so runs are reproducible and --resume
 * replays them exactly. Memory is allocated at create only.
 */
#ifndef CLAPP_CORE_AUGMENT_H
#define CLAPP_CORE_AUGMENT_H

#include <stddef.h>
#include <stdint.h>

typedef enum clapp_noise_color {
    CLAPP_NOISE_WHITE = 0,
    CLAPP_NOISE_PINK = 1,
    CLAPP_NOISE_EITHER = 2,   /* white or pink, drawn per sequence */
} clapp_noise_color;

typedef struct clapp_aug_params {
    double            gain_db;  /* G: gain uniform in [-G, G] dB; 0: off */
    const char       *snr;      /* "LO:HI" (or "X") in dB: additive noise; NULL or "": off.
                                 * Parsed at create, not kept. */
    clapp_noise_color noise;    /* colour of that noise */
    double            eq_db;    /* D: random equalisation of [-D, D] dB per band; 0: off */
    double            speed;    /* s: speed factor in [1/s, s]; 1 (or 0): off */
} clapp_aug_params;

#define CLAPP_AUG_MAX_EQ 3

typedef enum clapp_eq_type {
    CLAPP_EQ_PEAK = 0,
    CLAPP_EQ_LOW_SHELF = 1,
    CLAPP_EQ_HIGH_SHELF = 2,
} clapp_eq_type;

/* y[n] = b0 x[n] + b1 x[n-1] + b2 x[n-2] - a1 y[n-1] - a2 y[n-2] */
typedef struct clapp_biquad {
    double b0, b1, b2, a1, a2;
} clapp_biquad;

/* What one sequence gets. */
typedef struct clapp_aug_draw {
    double        gain_db, gain;   /* 0 dB and 1 when off */
    int           noise;           /* noise on */
    double        snr_db;
    int           pink;
    int           n_eq;            /* 0 when off */
    clapp_eq_type eq_type[CLAPP_AUG_MAX_EQ];
    double        eq_freq[CLAPP_AUG_MAX_EQ], eq_gain_db[CLAPP_AUG_MAX_EQ], eq_q[CLAPP_AUG_MAX_EQ];
    clapp_biquad  eq[CLAPP_AUG_MAX_EQ];
    double        speed;           /* f; 1 when off */
    uint64_t      noise_seed;
} clapp_aug_draw;

typedef struct clapp_aug clapp_aug;

/* Pulls up to `want` decoded samples; stops early only at the end (*eof) or
 * on an error (*error). */
typedef int64_t (*clapp_aug_pull)(void *ctx, float *dst, int64_t want, int *eof, int *error);

/* Parse and check p for audio at `rate` Hz with blocks of `block` steps and
 * `lanes` lanes. *a is NULL when every option is off. Returns 0,
 * CLAPP_E_INVAL (why: "aug_snr=x: ...") or CLAPP_E_NOMEM. */
int  clapp_aug_create(clapp_aug **a, const clapp_aug_params *p, int rate, int64_t block,
                      int32_t lanes, char *why, size_t whylen);
void clapp_aug_destroy(clapp_aug *a);

/* True when any option of p is on (p->snr is only tested for emptiness). */
int  clapp_aug_params_active(const clapp_aug_params *p);

/* The draws of sequence seq_id under `seed`. */
void clapp_aug_draw_seq(const clapp_aug *a, uint64_t seed, int64_t seq_id, clapp_aug_draw *d);

/* A new sequence on `lane` (also after reopening its file: state reset). */
void clapp_aug_begin(clapp_aug *a, int32_t lane, uint64_t seed, int64_t seq_id);

/* Up to `want` steps of the lane's sequence, resampled, equalised and
 * scaled; fewer only at the end (*eof) or on a pull error (*error). */
int64_t clapp_aug_read(clapp_aug *a, int32_t lane, clapp_aug_pull pull, void *ctx, float *dst,
                       int64_t want, int *eof, int *error);

/* Add the noise to the next n (<= block) delivered steps of the lane. */
void clapp_aug_add_noise(clapp_aug *a, int32_t lane, float *x, int64_t n);

/* Decoded (input) steps the lane's sequence has consumed so far. */
int64_t clapp_aug_input_steps(const clapp_aug *a, int32_t lane);
/* The lane's speed factor f (1 without speed perturbation). */
double  clapp_aug_speed(const clapp_aug *a, int32_t lane);
/* Output steps of n_in input steps at factor f: the i >= 0 with i*f < n_in. */
int64_t clapp_aug_out_len(int64_t n_in, double f);

#endif
