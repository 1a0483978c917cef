/* Adam and SGD. */
#define _GNU_SOURCE
#include "learning/optim.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void clapp_optim_default_params(clapp_optim_params *p)
{
    memset(p, 0, sizeof *p);
    p->type = CLAPP_OPTIM_ADAM;
    p->lr = 2e-4;
    p->beta1 = 0.9;
    p->beta2 = 0.999;
    p->eps = 1e-8;
}

int clapp_optim_check_params(const clapp_optim_params *p, char *err, size_t errlen)
{
    const char *what = NULL;
    if (p->type != CLAPP_OPTIM_ADAM && p->type != CLAPP_OPTIM_SGD)
        what = "type: expected adam or sgd";
    else if (!(p->lr >= 0))
        what = "lr: expected >= 0";
    else if (!(p->beta1 >= 0 && p->beta1 < 1))
        what = "beta1: expected in [0, 1)";
    else if (!(p->beta2 >= 0 && p->beta2 < 1))
        what = "beta2: expected in [0, 1)";
    else if (!(p->eps > 0))
        what = "eps: expected > 0";
    else if (!(p->weight_decay >= 0))
        what = "weight_decay: expected >= 0";
    else if (!(p->momentum >= 0 && p->momentum < 1))
        what = "momentum: expected in [0, 1)";
    else if (p->warmup < 0)
        what = "warmup: expected a number of steps >= 0";
    else if (!(p->clip >= 0))
        what = "clip: expected a norm >= 0 (0: off)";
    if (what && err)
        snprintf(err, errlen, "optimizer %s", what);
    return what ? CLAPP_E_INVAL : CLAPP_OK;
}

int clapp_optim_init(clapp_optim *o, const clapp_optim_params *p)
{
    memset(o, 0, sizeof *o);
    o->p = *p;
    return clapp_optim_check_params(p, NULL, 0);
}

double clapp_optim_lr_scale(const clapp_optim_params *p, int64_t t)
{
    if (p->warmup > 0 && t < p->warmup)
        return (double)(t > 0 ? t : 0) / (double)p->warmup;
    return 1.0;
}

int clapp_optim_add(clapp_optim *o, const char *element, const clapp_named_tensor *t, double lr)
{
    clapp_optim_slot *s;
    if (!t->value || !t->grad || clapp_tensor_numel(t->value) != clapp_tensor_numel(t->grad))
        return CLAPP_E_INVAL;
    if (o->n == o->cap) {
        int32_t cap = o->cap ? o->cap * 2 : 16;
        clapp_optim_slot *slots = realloc(o->slots, (size_t)cap * sizeof *slots);
        if (!slots)
            return CLAPP_E_NOMEM;
        o->slots = slots;
        o->cap = cap;
    }
    s = &o->slots[o->n];
    memset(s, 0, sizeof *s);
    if (asprintf(&s->name, "%s.%s", element, t->name) < 0) {
        s->name = NULL;
        return CLAPP_E_NOMEM;
    }
    s->value = t->value;
    s->grad = t->grad;
    /* A new group unless the previous slot belongs to the same element. */
    s->group = 0;
    if (o->n > 0) {
        const clapp_optim_slot *prev = &o->slots[o->n - 1];
        size_t len = strlen(element);
        s->group = prev->group + 1;
        if (!strncmp(prev->name, element, len) && prev->name[len] == '.')
            s->group = prev->group;
    }
    s->lr = lr < 0 ? o->p.lr : lr;
    s->m.ndim = s->v.ndim = 1;
    s->m.shape[0] = s->v.shape[0] = clapp_tensor_numel(t->value);
    if (clapp_tensor_alloc(&s->m) < 0 ||
        (o->p.type == CLAPP_OPTIM_ADAM && clapp_tensor_alloc(&s->v) < 0)) {
        clapp_tensor_free(&s->m);
        free(s->name);
        return CLAPP_E_NOMEM;
    }
    o->n++;
    return CLAPP_OK;
}

/* One step's shared settings: learning-rate factor (warmup), the gradient
 * scale of the slot's group (clipping), whether to record norms. */
typedef struct step_ctx {
    double lr_scale;
    float  gscale;
    int    record;
} step_ctx;

/* The per-weight loops take `extra` (decoupled decay or recording) as a
 * constant after inlining, so the default path stays as lean as before. */
#define ALWAYS_INLINE static inline __attribute__((always_inline))

ALWAYS_INLINE void adam_loop(int64_t n, float *w, float *g, float *m, float *v, float b1, float b2,
                             float step, float inv_sqrt_bc2, float eps, float gs, float wd,
                             float dwd, int extra, double *du, double *ww)
{
    for (int64_t i = 0; i < n; i++) {
        const float old = w[i], gi = gs * g[i] + wd * w[i];
        float d;
        m[i] = b1 * m[i] + (1.0f - b1) * gi;
        v[i] = b2 * v[i] + (1.0f - b2) * gi * gi;
        d = step * m[i] / (sqrtf(v[i]) * inv_sqrt_bc2 + eps);
        if (extra)
            d += dwd * old;
        w[i] -= d;
        g[i] = 0.0f;
        if (extra) {   /* the change as stored, after rounding */
            *du += ((double)old - w[i]) * ((double)old - w[i]);
            *ww += (double)w[i] * w[i];
        }
    }
}

static void adam_step(const clapp_optim_params *p, clapp_optim_slot *s, int64_t t,
                      const step_ctx *c)
{
    const int64_t n = clapp_tensor_numel(s->value);
    const double lr = s->lr * c->lr_scale;
    const float wd = p->decoupled_wd ? 0.0f : (float)p->weight_decay;
    const float dwd = p->decoupled_wd ? (float)(lr * p->weight_decay) : 0.0f;
    /* Bias corrections folded into the step size, as torch.optim.Adam does. */
    const double bc1 = 1.0 - pow(p->beta1, (double)t), bc2 = 1.0 - pow(p->beta2, (double)t);
    const float step = (float)(lr / bc1);
    const float inv_sqrt_bc2 = (float)(1.0 / sqrt(bc2));
    double du = 0.0, ww = 0.0;
    if (dwd != 0.0f || c->record)
        adam_loop(n, s->value->data, s->grad->data, s->m.data, s->v.data, (float)p->beta1,
                  (float)p->beta2, step, inv_sqrt_bc2, (float)p->eps, c->gscale, wd, dwd, 1, &du, &ww);
    else
        adam_loop(n, s->value->data, s->grad->data, s->m.data, s->v.data, (float)p->beta1,
                  (float)p->beta2, step, inv_sqrt_bc2, (float)p->eps, c->gscale, wd, 0.0f, 0, &du, &ww);
    if (c->record) {
        s->update_norm = sqrt(du);
        s->value_norm = sqrt(ww);
    }
}

ALWAYS_INLINE void sgd_loop(int64_t n, float *w, float *g, float *m, float lr, float mu, float gs,
                            float wd, float dwd, int extra, double *du, double *ww)
{
    for (int64_t i = 0; i < n; i++) {
        const float old = w[i];
        float gi = gs * g[i] + wd * w[i], d;
        if (mu != 0.0f) {
            m[i] = mu * m[i] + gi;
            gi = m[i];
        }
        d = lr * gi;
        if (extra)
            d += dwd * old;
        w[i] -= d;
        g[i] = 0.0f;
        if (extra) {
            *du += ((double)old - w[i]) * ((double)old - w[i]);
            *ww += (double)w[i] * w[i];
        }
    }
}

static void sgd_step(const clapp_optim_params *p, clapp_optim_slot *s, const step_ctx *c)
{
    const int64_t n = clapp_tensor_numel(s->value);
    const double lr = s->lr * c->lr_scale;
    const float wd = p->decoupled_wd ? 0.0f : (float)p->weight_decay;
    const float dwd = p->decoupled_wd ? (float)(lr * p->weight_decay) : 0.0f;
    double du = 0.0, ww = 0.0;
    if (dwd != 0.0f || c->record)
        sgd_loop(n, s->value->data, s->grad->data, s->m.data, (float)lr, (float)p->momentum,
                 c->gscale, wd, dwd, 1, &du, &ww);
    else
        sgd_loop(n, s->value->data, s->grad->data, s->m.data, (float)lr, (float)p->momentum,
                 c->gscale, wd, 0.0f, 0, &du, &ww);
    if (c->record) {
        s->update_norm = sqrt(du);
        s->value_norm = sqrt(ww);
    }
}

static double sum_squares(const clapp_tensor *t)
{
    const int64_t n = clapp_tensor_numel(t);
    double acc = 0.0;
    for (int64_t i = 0; i < n; i++)
        acc += (double)t->data[i] * t->data[i];
    return acc;
}

void clapp_optim_step(clapp_optim *o)
{
    step_ctx c = {1.0, 1.0f, o->record};
    o->t++;
    c.lr_scale = clapp_optim_lr_scale(&o->p, o->t);
    for (int32_t i = 0, j; i < o->n; i = j) {
        /* The run of slots [i, j) of one element: clipped together. */
        double g2 = 0.0;
        for (j = i; j < o->n && o->slots[j].group == o->slots[i].group; j++) {
            if (o->p.clip > 0 || o->record) {
                double sq = sum_squares(o->slots[j].grad);
                o->slots[j].grad_norm = sqrt(sq);
                g2 += sq;
            }
        }
        c.gscale = 1.0f;
        if (o->p.clip > 0 && sqrt(g2) > o->p.clip)
            c.gscale = (float)(o->p.clip / sqrt(g2));
        for (int32_t k = i; k < j; k++) {
            if (o->p.type == CLAPP_OPTIM_ADAM)
                adam_step(&o->p, &o->slots[k], o->t, &c);
            else
                sgd_step(&o->p, &o->slots[k], &c);
        }
    }
    o->record = 0;
}

void clapp_optim_zero_grad(clapp_optim *o)
{
    for (int32_t i = 0; i < o->n; i++)
        clapp_tensor_zero(o->slots[i].grad);
}

void clapp_optim_free(clapp_optim *o)
{
    if (!o)
        return;
    for (int32_t i = 0; i < o->n; i++) {
        free(o->slots[i].name);
        clapp_tensor_free(&o->slots[i].m);
        clapp_tensor_free(&o->slots[i].v);
    }
    free(o->slots);
    memset(o, 0, sizeof *o);
}
