/* Adam and SGD. */
#define _GNU_SOURCE
#include "optim.h"

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

int clapp_optim_init(clapp_optim *o, const clapp_optim_params *p)
{
    memset(o, 0, sizeof *o);
    o->p = *p;
    return CLAPP_OK;
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

static void adam_step(const clapp_optim_params *p, clapp_optim_slot *s, int64_t t)
{
    const int64_t n = clapp_tensor_numel(s->value);
    float *w = s->value->data, *g = s->grad->data, *m = s->m.data, *v = s->v.data;
    const float b1 = (float)p->beta1, b2 = (float)p->beta2, wd = (float)p->weight_decay;
    /* Bias corrections folded into the step size, as torch.optim.Adam does. */
    const double bc1 = 1.0 - pow(p->beta1, (double)t), bc2 = 1.0 - pow(p->beta2, (double)t);
    const float step = (float)(s->lr / bc1);
    const float inv_sqrt_bc2 = (float)(1.0 / sqrt(bc2));
    const float eps = (float)p->eps;
    for (int64_t i = 0; i < n; i++) {
        float gi = g[i] + wd * w[i];
        m[i] = b1 * m[i] + (1.0f - b1) * gi;
        v[i] = b2 * v[i] + (1.0f - b2) * gi * gi;
        w[i] -= step * m[i] / (sqrtf(v[i]) * inv_sqrt_bc2 + eps);
        g[i] = 0.0f;
    }
}

static void sgd_step(const clapp_optim_params *p, clapp_optim_slot *s)
{
    const int64_t n = clapp_tensor_numel(s->value);
    float *w = s->value->data, *g = s->grad->data, *m = s->m.data;
    const float lr = (float)s->lr, mu = (float)p->momentum, wd = (float)p->weight_decay;
    for (int64_t i = 0; i < n; i++) {
        float gi = g[i] + wd * w[i];
        if (mu != 0.0f) {
            m[i] = mu * m[i] + gi;
            gi = m[i];
        }
        w[i] -= lr * gi;
        g[i] = 0.0f;
    }
}

void clapp_optim_step(clapp_optim *o)
{
    o->t++;
    for (int32_t i = 0; i < o->n; i++) {
        if (o->p.type == CLAPP_OPTIM_ADAM)
            adam_step(&o->p, &o->slots[i], o->t);
        else
            sgd_step(&o->p, &o->slots[i]);
    }
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
