/* The graph runtime. */
#define _GNU_SOURCE
#include "graph/graph.h"
#include "clapp/plugin_util.h"

#include <math.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

void clapp_graph_default_params(clapp_graph_params *p)
{
    memset(p, 0, sizeof *p);
    p->learn = 1;
    p->seed = 1;
    p->shards = 1;
    clapp_optim_default_params(&p->optim);
}

static double now_seconds(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* A per-element seed: the run seed mixed with the element's name (FNV-1a),
 * not its position, so that inserting a sink (a probe, a features writer)
 * leaves every other element's initialisation and sampling as it was. */
static uint64_t element_seed(uint64_t seed, const char *name)
{
    uint64_t h = 0xCBF29CE484222325ull;
    for (const unsigned char *c = (const unsigned char *)name; *c; c++)
        h = (h ^ *c) * 0x100000001B3ull;
    return clapp_mix64(seed + 0x9E3779B97F4A7C15ull * (h | 1));
}

static const clapp_param_value *value_of(const clapp_pipe_elem *pe, const char *key)
{
    return clapp_param_find(pe->values, pe->desc->n_params, key);
}

static int alloc_block(clapp_block *b, const clapp_stream_info *info)
{
    memset(b, 0, sizeof *b);
    if (clapp_tensor_alloc_shape(&b->x, info->ndim, info->shape) < 0)
        return CLAPP_E_NOMEM;
    b->lanes = (int32_t)info->shape[0];
    b->lane = calloc((size_t)b->lanes, sizeof *b->lane);
    if (!b->lane)
        return CLAPP_E_NOMEM;
    b->rate = info->rate;
    return CLAPP_OK;
}

static void free_block(clapp_block *b)
{
    clapp_tensor_free(&b->x);
    free(b->lane);
    memset(b, 0, sizeof *b);
}

static int loss_compute(clapp_node *nd, const clapp_block *z, const clapp_block *c,
                        clapp_tensor *grad_z, clapp_tensor *grad_c)
{
    return nd->loss_form->compute(nd->loss_self, z, c, grad_z, grad_c, &nd->last);
}

static void loss_destroy(clapp_node *nd)
{
    if (nd->loss_form && nd->loss_self)
        nd->loss_form->destroy(nd->loss_self);
    nd->loss_self = NULL;
}

/* The context= layer of loss element i (-1: none; a loss without context=
 * in its table has none); checked against target=. The streams are checked
 * once both exist, the loss's own options by its form. */
static int feedback_context(clapp_graph *g, int i, int *ctx, char *err, size_t errlen)
{
    const clapp_pipe_elem *pe = g->nodes[i].pe;
    const clapp_param_value *cv = value_of(pe, "context");
    const char *context = cv ? cv->s : NULL;
    const clapp_param_value *tv = value_of(pe, "target");
    const char *target = tv ? tv->s : NULL;
    int c;

    *ctx = -1;
    if (!context || !*context)
        return CLAPP_OK;
    c = clapp_pipedesc_find(g->pd, context);
    if (c < 1 || !g->pd->elems[c].desc || g->pd->elems[c].desc->kind != CLAPP_KIND_LAYER) {
        snprintf(err, errlen, "%s '%s': context=%s is not a layer of the pipeline", pe->type,
                 pe->name, context);
        return CLAPP_E_INVAL;
    }
    if (c == g->nodes[i].producer) {
        snprintf(err, errlen, "%s '%s': context=%s is this loss's own layer; leave context= out",
                 pe->type, pe->name, context);
        return CLAPP_E_INVAL;
    }
    if (target && *target) {
        snprintf(err, errlen, "%s '%s': context=%s and target=%s cannot be combined (a feedback "
                 "loss predicts its own layer's output)", pe->type, pe->name, context, target);
        return CLAPP_E_INVAL;
    }
    *ctx = c;
    return CLAPP_OK;
}

/* Create loss element i: where its context and target streams come from
 * (the layer before it, target=, context=), then its form. A feedback loss
 * whose context layer comes later is created after every element (late = 1),
 * once that layer's stream is known. */
static int create_loss(clapp_graph *g, int i, int late, char *err, size_t errlen)
{
    clapp_node *nd = &g->nodes[i];
    const clapp_pipe_elem *pe = nd->pe;
    const clapp_param_value *tv = value_of(pe, "target");
    const char *target = tv ? tv->s : NULL;
    const clapp_stream_info *cs, *zs;
    clapp_loss_setup s;
    int rc;

    if (nd->producer < 0) {
        snprintf(err, errlen, "%s '%s': a loss element needs a layer before it", pe->type, pe->name);
        return CLAPP_E_INVAL;
    }
    nd->target = -1;
    nd->loss_form = clapp_loss_form_find(nd->desc->id);
    if (!nd->loss_form) {
        snprintf(err, errlen, "%s '%s': no loss form implements this element", pe->type, pe->name);
        return CLAPP_E_UNSUPPORTED;
    }
    rc = feedback_context(g, i, &nd->context, err, errlen);
    if (rc < 0)
        return rc;
    if (nd->context > i && !late)
        return CLAPP_OK;   /* created after the context layer (clapp_graph_create) */

    cs = &g->nodes[nd->producer].out_info;
    zs = cs;
    if (nd->context >= 0) {
        /* direct feedback: targets z = the own layer, context c = the other layer, detached */
        const clapp_node *cn = &g->nodes[nd->context];
        cs = &cn->out_info;
        if (cs->shape[0] != zs->shape[0] || cs->shape[2] != zs->shape[2] || cs->rate != zs->rate) {
            snprintf(err, errlen, "%s '%s': context=%s runs at %g steps/s (%lld lanes, %lld steps "
                     "per block) but its layer %s at %g (%lld, %lld); a feedback loss needs the "
                     "same time rate and lanes: place it after a layer at the context's rate",
                     pe->type, pe->name, cn->pe->name, cs->rate, (long long)cs->shape[0],
                     (long long)cs->shape[2], g->nodes[nd->producer].pe->name, zs->rate,
                     (long long)zs->shape[0], (long long)zs->shape[2]);
            return CLAPP_E_SHAPE;
        }
    }
    memset(&s, 0, sizeof s);
    if (target && *target) {
        int t = clapp_pipedesc_find(g->pd, target);
        if (t < 0 || t >= i) {
            snprintf(err, errlen, "%s '%s': target=%s is not an element before it", pe->type,
                     pe->name, target);
            return CLAPP_E_INVAL;
        }
        if (g->nodes[t].kind != CLAPP_KIND_LAYER) {
            snprintf(err, errlen, "%s '%s': target=%s is not a layer", pe->type, pe->name, target);
            return CLAPP_E_INVAL;
        }
        nd->target = t;
        zs = &g->nodes[t].out_info;
        if (zs->shape[2] != cs->shape[2] || zs->rate != cs->rate) {
            snprintf(err, errlen, "%s '%s': target=%s runs at %g steps/s (%lld per block) but the "
                     "context at %g (%lld); they must share the time axis", pe->type, pe->name,
                     target, zs->rate, (long long)zs->shape[2], cs->rate, (long long)cs->shape[2]);
            return CLAPP_E_SHAPE;
        }
        s.target = 1;
        for (int j = nd->producer; j >= 0; j = g->nodes[j].prev_in_module)
            s.target_in_module |= j == t;
    }
    s.pe = pe;
    s.z = zs;
    s.c = cs;
    s.feedback = nd->context >= 0;
    s.seed = element_seed(g->p.seed, pe->name);
    s.host = g->host;
    rc = nd->loss_form->create(&nd->loss_self, &s, err, errlen);
    if (rc < 0)
        return rc;
    return nd->loss_form->tensors(nd->loss_self, &nd->tensors, &nd->n_tensors);
}

static int create_plugin(clapp_graph *g, int i, const clapp_stream_info *in, char *err,
                         size_t errlen)
{
    clapp_node *nd = &g->nodes[i];
    const clapp_pipe_elem *pe = nd->pe;
    clapp_create_info ci;
    int rc;

    memset(&ci, 0, sizeof ci);
    ci.struct_size = sizeof ci;
    ci.host = g->host;
    ci.instance_name = pe->name;
    ci.values = pe->values;
    ci.n_values = pe->desc->n_params;
    ci.seed = element_seed(g->p.seed, pe->name);
    rc = nd->desc->create(&ci, &nd->inst);
    if (rc < 0) {
        snprintf(err, errlen, "%s '%s': create failed (status %d; see the log above)", pe->type,
                 pe->name, rc);
        return rc;
    }
    rc = nd->desc->configure(nd->inst, in, nd->kind == CLAPP_KIND_LAYER ? &nd->out_info : NULL);
    if (rc < 0) {
        snprintf(err, errlen, "%s '%s': cannot take its input [%lld x %lld x %lld%s] "
                 "(status %d; see the log above)", pe->type, pe->name, (long long)in->shape[0],
                 (long long)in->shape[1], (long long)in->shape[2], in->ndim > 3 ? " x ..." : "", rc);
        return rc;
    }
    if (nd->kind != CLAPP_KIND_LAYER) {
        nd->out_info = *in;
    } else {
        if (nd->out_info.ndim < 3 || nd->out_info.shape[0] != in->shape[0]) {
            snprintf(err, errlen, "%s '%s': configure gave a bad output shape", pe->type, pe->name);
            return CLAPP_E_SHAPE;
        }
        rc = alloc_block(&nd->out, &nd->out_info);
        if (rc < 0)
            return rc;
    }
    if (nd->desc->tensors) {
        rc = nd->desc->tensors(nd->inst, &nd->tensors, &nd->n_tensors);
        if (rc < 0)
            return rc;
    }
    if (nd->desc->set_mode) {
        rc = nd->desc->set_mode(nd->inst, g->p.learn && nd->learn ? CLAPP_MODE_LEARN
                                                                   : CLAPP_MODE_FROZEN);
        if (rc < 0)
            return rc;
    }
    return CLAPP_OK;
}

int clapp_graph_create(clapp_graph *g, clapp_pipeline_desc *pd, const clapp_stream_info *source,
                       const clapp_graph_params *p, const clapp_host *host, char *err,
                       size_t errlen)
{
    int rc = CLAPP_OK, producer = -1, module_prev = -1;
    const clapp_stream_info *cur = source;

    memset(g, 0, sizeof *g);
    g->p = *p;
    g->host = host;
    g->pd = pd;
    g->source_info = *source;
    if (clapp_optim_init(&g->optim, &p->optim) < 0) {
        clapp_optim_check_params(&p->optim, err, errlen);
        return CLAPP_E_INVAL;
    }
    if (pd->n < 1 || !pd->elems[0].desc || pd->elems[0].desc->kind != CLAPP_KIND_SOURCE) {
        snprintf(err, errlen, "%s: a pipeline starts with a source element", pd->file);
        return CLAPP_E_INVAL;
    }
    g->nodes = calloc((size_t)pd->n, sizeof *g->nodes);
    if (!g->nodes)
        return CLAPP_E_NOMEM;
    g->n = pd->n;
    g->nodes[0].pe = &pd->elems[0];
    g->nodes[0].desc = pd->elems[0].desc;
    g->nodes[0].kind = CLAPP_KIND_SOURCE;
    g->nodes[0].producer = -1;
    g->nodes[0].out_info = *source;
    g->loss_version = CLAPP_LOSS_VERSION;

    for (int i = 1; i < pd->n; i++) {
        clapp_node *nd = &g->nodes[i];
        nd->pe = &pd->elems[i];
        nd->desc = nd->pe->desc;
        nd->kind = nd->desc->kind;
        nd->producer = producer;
        nd->prev_in_module = -1;
        nd->context = -1;
        nd->learn = nd->pe->learn;
        nd->lr = nd->pe->lr;
        switch (nd->kind) {
        case CLAPP_KIND_SOURCE:
            snprintf(err, errlen, "%s:%d: only the first element may be a source", pd->file,
                     nd->pe->line);
            rc = CLAPP_E_INVAL;
            goto fail;
        case CLAPP_KIND_LOSS:
            rc = create_loss(g, i, 0, err, errlen);
            if (rc < 0)
                goto fail;
            nd->out_info = *cur;
            module_prev = -1;   /* the next layer starts a new module */
            break;
        case CLAPP_KIND_LAYER:
            nd->prev_in_module = module_prev;
            rc = create_plugin(g, i, cur, err, errlen);
            if (rc < 0)
                goto fail;
            if (g->p.learn) {
                nd->grad.ndim = nd->out_info.ndim;
                memcpy(nd->grad.shape, nd->out_info.shape, sizeof nd->grad.shape);
                if (clapp_tensor_alloc(&nd->grad) < 0) {
                    rc = CLAPP_E_NOMEM;
                    goto fail;
                }
            }
            producer = i;
            module_prev = i;
            break;
        case CLAPP_KIND_SINK:
            rc = create_plugin(g, i, cur, err, errlen);
            if (rc < 0)
                goto fail;
            break;
        }
        cur = &nd->out_info;
    }
    /* Feedback losses whose context layer came after them. */
    for (int i = 1; i < g->n; i++) {
        clapp_node *nd = &g->nodes[i];
        if (nd->kind == CLAPP_KIND_LOSS && nd->context > i) {
            rc = create_loss(g, i, 1, err, errlen);
            if (rc < 0)
                goto fail;
        }
    }

    /* Everything that learns goes to the optimizer, in graph order. */
    if (g->p.learn) {
        for (int i = 1; i < g->n; i++) {
            clapp_node *nd = &g->nodes[i];
            nd->optim_first = g->optim.n;
            if (!nd->learn)
                continue;
            for (int32_t t = 0; t < nd->n_tensors; t++) {
                if (!nd->tensors[t].grad)
                    continue;
                rc = clapp_optim_add(&g->optim, nd->pe->name, &nd->tensors[t], nd->lr);
                if (rc < 0)
                    goto fail;
            }
            nd->optim_count = g->optim.n - nd->optim_first;
        }
    }
    clapp_graph_mix_draws(g);
    if (g->p.diag_every > 0) {
        int64_t widest = 1;
        for (int i = 1; i < g->n; i++) {
            clapp_node *nd = &g->nodes[i];
            const clapp_param_value *act = nd->kind == CLAPP_KIND_LAYER ? value_of(nd->pe, "activation")
                                                                         : NULL;
            nd->relu = act && act->s && !strcmp(act->s, "relu");
            if (nd->kind == CLAPP_KIND_LAYER && nd->out_info.shape[1] > widest)
                widest = nd->out_info.shape[1];
        }
        rc = clapp_diag_init(&g->diag, widest);
        if (rc < 0)
            goto fail;
    }
    return CLAPP_OK;
fail:
    if (!*err)
        snprintf(err, errlen, "%s: cannot build the graph (status %d)", pd->file, rc);
    return rc;
}

/* Back-propagate node `i`'s grad through its module, down to the module's first layer. */
static int module_backward(clapp_graph *g, int i, char *err, size_t errlen)
{
    while (i >= 0) {
        clapp_node *nd = &g->nodes[i];
        clapp_tensor *grad_in = NULL;
        int prev = nd->prev_in_module;
        int rc;
        double t0 = now_seconds();
        /* A frozen layer (learn=false) runs without what backward needs, so
         * it also stops the gradient for the layers below it in its module. */
        if (!nd->learn)
            return CLAPP_OK;
        if (prev >= 0 && g->nodes[prev].learn)
            grad_in = &g->nodes[prev].grad;
        else
            prev = -1;
        rc = nd->desc->backward(nd->inst, &nd->grad, grad_in);
        if (rc < 0) {
            snprintf(err, errlen, "%s '%s': backward failed (status %d)", nd->pe->type,
                     nd->pe->name, rc);
            return rc;
        }
        nd->seconds += now_seconds() - t0;
        i = prev;
    }
    return CLAPP_OK;
}

/* Zero the grads of the layers of the module that ends at layer i. */
static void module_zero_grad(clapp_graph *g, int i)
{
    for (; i >= 0; i = g->nodes[i].prev_in_module)
        clapp_tensor_zero(&g->nodes[i].grad);
}

/* Direct feedback: the loss on the own layer's output z with the context
 * layer's output as c; only the own module gets a gradient (grad_c NULL). */
static int run_feedback_loss(clapp_graph *g, int i, char *err, size_t errlen)
{
    clapp_node *nd = &g->nodes[i];
    clapp_node *zp = &g->nodes[nd->producer];
    clapp_tensor *grad_z = NULL;
    int rc;
    double t0 = now_seconds();

    if (zp->learn) {
        module_zero_grad(g, nd->producer);
        grad_z = &zp->grad;
    }
    rc = loss_compute(nd, &zp->out, &g->nodes[nd->context].out, grad_z, NULL);
    nd->seconds += now_seconds() - t0;
    if (rc < 0) {
        snprintf(err, errlen, "%s '%s': loss failed (status %d)", nd->pe->type, nd->pe->name, rc);
        return rc;
    }
    if (nd->last.pairs > 0) {
        nd->loss_sum += nd->last.loss;
        nd->loss_count++;
    }
    return grad_z ? module_backward(g, nd->producer, err, errlen) : CLAPP_OK;
}

static int run_loss(clapp_graph *g, int i, char *err, size_t errlen)
{
    clapp_node *nd = &g->nodes[i];
    clapp_node *cp = &g->nodes[nd->producer];
    clapp_node *tp = nd->target >= 0 ? &g->nodes[nd->target] : NULL;
    clapp_tensor *grad_c = NULL, *grad_z = NULL;
    int rc;
    double t0 = now_seconds();

    if (nd->context >= 0)
        return run_feedback_loss(g, i, err, errlen);

    /* End to end (CPC): the target may sit inside the context's module;
     * then one backward pass from the context carries both terms. */
    int target_in_module = 0;
    for (int j = nd->producer; tp && j >= 0; j = g->nodes[j].prev_in_module)
        if (j == nd->target)
            target_in_module = 1;
    if (cp->learn) {
        module_zero_grad(g, nd->producer);
        grad_c = &cp->grad;
    }
    if (tp && tp->learn && nd->loss_form->grad_target && nd->loss_form->grad_target(nd->loss_self)) {
        if (!target_in_module)
            module_zero_grad(g, nd->target);
        grad_z = &tp->grad;
    }
    if (!tp)
        grad_z = grad_c;
    rc = loss_compute(nd, tp ? &tp->out : &cp->out, &cp->out, grad_z, grad_c);
    nd->seconds += now_seconds() - t0;
    if (rc < 0) {
        snprintf(err, errlen, "%s '%s': loss failed (status %d)", nd->pe->type, nd->pe->name, rc);
        return rc;
    }
    if (nd->last.pairs > 0) {
        nd->loss_sum += nd->last.loss;
        nd->loss_count++;
    }
    if (grad_c) {
        rc = module_backward(g, nd->producer, err, errlen);
        if (rc < 0)
            return rc;
    }
    if (tp && grad_z && !(target_in_module && grad_c))
        rc = module_backward(g, nd->target, err, errlen);
    return rc;
}

/* The layers' feature statistics of this block; asks the optimizer to
 * record the gradient norms of the step that follows. */
static int diag_features(clapp_graph *g)
{
    for (int i = 1; i < g->n; i++) {
        clapp_node *nd = &g->nodes[i];
        memset(&nd->diag, 0, sizeof nd->diag);
        if (nd->kind != CLAPP_KIND_LAYER)
            continue;
        int rc = clapp_diag_compute(&g->diag, &nd->out, nd->relu, &nd->diag.out);
        if (rc < 0)
            return rc;
        nd->diag.has_out = 1;
    }
    g->optim.record = g->p.learn;
    return CLAPP_OK;
}

/* Per element: the joint norms over its optimizer slots. */
static void diag_gradients(clapp_graph *g)
{
    for (int i = 1; i < g->n; i++) {
        clapp_node *nd = &g->nodes[i];
        double g2 = 0.0, u2 = 0.0, w2 = 0.0;
        if (!g->p.learn || nd->optim_count == 0)
            continue;
        for (int32_t k = nd->optim_first; k < nd->optim_first + nd->optim_count; k++) {
            const clapp_optim_slot *s = &g->optim.slots[k];
            g2 += s->grad_norm * s->grad_norm;
            u2 += s->update_norm * s->update_norm;
            w2 += s->value_norm * s->value_norm;
        }
        nd->diag.grad_norm = sqrt(g2);
        nd->diag.update_norm = sqrt(u2);
        nd->diag.weight_norm = sqrt(w2);
        nd->diag.has_grad = 1;
    }
}

int clapp_graph_compute(clapp_graph *g, const clapp_block *blk, char *err, size_t errlen)
{
    const clapp_block *cur = blk;
    const int64_t k = g->blocks + 1;   /* this block's number */
    const int diag = g->p.diag_every > 0 && (k == 1 || k % g->p.diag_every == 0);
    double t0;
    int rc;

    g->diag_pending = 0;

    for (int i = 1; i < g->n; i++) {
        clapp_node *nd = &g->nodes[i];
        nd->in = cur;
        switch (nd->kind) {
        case CLAPP_KIND_LAYER:
            t0 = now_seconds();
            memcpy(nd->out.lane, cur->lane, (size_t)cur->lanes * sizeof *cur->lane);
            nd->out.label_rate = cur->label_rate;
            rc = nd->desc->forward(nd->inst, cur, &nd->out);
            nd->seconds += now_seconds() - t0;
            if (rc < 0) {
                snprintf(err, errlen, "%s '%s': forward failed (status %d)", nd->pe->type,
                         nd->pe->name, rc);
                return rc;
            }
            cur = &nd->out;
            /* feedback losses that waited for this layer's output */
            for (int j = 1; g->p.learn && j < i; j++) {
                if (g->nodes[j].kind != CLAPP_KIND_LOSS || g->nodes[j].context != i)
                    continue;
                rc = run_loss(g, j, err, errlen);
                if (rc < 0)
                    return rc;
            }
            break;
        case CLAPP_KIND_SINK:
            t0 = now_seconds();
            rc = nd->desc->forward(nd->inst, cur, NULL);
            nd->seconds += now_seconds() - t0;
            if (rc < 0) {
                snprintf(err, errlen, "%s '%s': failed (status %d)", nd->pe->type, nd->pe->name,
                         rc);
                return rc;
            }
            break;
        case CLAPP_KIND_LOSS:
            if (g->p.learn && nd->context <= i) {   /* else: after the context layer */
                rc = run_loss(g, i, err, errlen);
                if (rc < 0)
                    return rc;
            }
            break;
        case CLAPP_KIND_SOURCE:
            break;
        }
    }
    if (diag) {
        t0 = now_seconds();
        rc = diag_features(g);
        g->diag_seconds = now_seconds() - t0;
        if (rc < 0) {
            snprintf(err, errlen, "diagnostics failed (status %d)", rc);
            return rc;
        }
        g->diag_pending = 1;
    }
    return CLAPP_OK;
}

void clapp_graph_apply(clapp_graph *g)
{
    if (g->p.learn)
        clapp_optim_step(&g->optim);
    g->blocks++;
    if (g->diag_pending) {
        diag_gradients(g);
        g->diag_block = g->blocks;
    }
    g->diag_pending = 0;
}

int clapp_graph_process(clapp_graph *g, const clapp_block *blk, char *err, size_t errlen)
{
    int rc = clapp_graph_compute(g, blk, err, errlen);
    if (rc < 0)
        return rc;
    clapp_graph_apply(g);
    return CLAPP_OK;
}

void clapp_graph_mix_draws(clapp_graph *g)
{
    uint64_t st[4];
    if (g->p.shard <= 0)
        return;
    for (int i = 1; i < g->n; i++) {
        clapp_node *nd = &g->nodes[i];
        if (nd->kind != CLAPP_KIND_LOSS || !nd->loss_form || !nd->loss_form->get_rng ||
            !nd->loss_form->set_rng || !nd->loss_form->get_rng(nd->loss_self, st))
            continue;
        /* A state word of zero everywhere would stall xoshiro; mixing each
         * word through splitmix64 with the shard cannot give four zeros in
         * practice, and distinct shards give unrelated streams. */
        for (int w = 0; w < 4; w++) {
            uint64_t x = st[w] ^ (0x9E3779B97F4A7C15ull * (uint64_t)g->p.shard + (uint64_t)w);
            st[w] = clapp_splitmix64(&x);
        }
        nd->loss_form->set_rng(nd->loss_self, st);
    }
}

int clapp_graph_finish(clapp_graph *g, char *err, size_t errlen)
{
    int status = CLAPP_OK;
    for (int i = 1; i < g->n; i++) {
        clapp_node *nd = &g->nodes[i];
        if (nd->inst && nd->desc->finish) {
            int rc = nd->desc->finish(nd->inst);
            if (rc < 0 && status == CLAPP_OK) {
                snprintf(err, errlen, "%s '%s': finish failed (status %d)", nd->pe->type,
                         nd->pe->name, rc);
                status = rc;
            }
        }
    }
    return status;
}

int clapp_graph_set_sink_mode(clapp_graph *g, clapp_mode mode)
{
    for (int i = 1; i < g->n; i++) {
        clapp_node *nd = &g->nodes[i];
        if (nd->kind == CLAPP_KIND_SINK && nd->desc->set_mode) {
            int rc = nd->desc->set_mode(nd->inst, mode);
            if (rc < 0)
                return rc;
        }
    }
    return CLAPP_OK;
}

void clapp_graph_reset(clapp_graph *g)
{
    for (int i = 1; i < g->n; i++)
        if (g->nodes[i].inst && g->nodes[i].desc->reset)
            g->nodes[i].desc->reset(g->nodes[i].inst, -1);
}

/* report() is only read if the plugin's descriptor is new enough to have it. */
int clapp_graph_report(const clapp_graph *g, int i, char *buf, size_t cap)
{
    const clapp_plugin_desc *d = g->nodes[i].desc;
    buf[0] = 0;
    if (!g->nodes[i].inst || d->struct_size < offsetof(clapp_plugin_desc, report) + sizeof(void *) ||
        !d->report)
        return 0;
    return d->report(g->nodes[i].inst, buf, cap);
}

const clapp_block *clapp_graph_output(const clapp_graph *g, int i)
{
    if (i <= 0 || i >= g->n)
        return g->nodes ? g->nodes[1 < g->n ? 1 : 0].in : NULL;
    if (g->nodes[i].kind == CLAPP_KIND_LAYER)
        return &g->nodes[i].out;
    return g->nodes[i].in;
}

void clapp_graph_destroy(clapp_graph *g)
{
    if (!g)
        return;
    for (int i = 0; g->nodes && i < g->n; i++) {
        clapp_node *nd = &g->nodes[i];
        if (nd->inst && nd->desc && nd->desc->destroy)
            nd->desc->destroy(nd->inst);
        loss_destroy(nd);
        free_block(&nd->out);
        clapp_tensor_free(&nd->grad);
    }
    free(g->nodes);
    clapp_optim_free(&g->optim);
    clapp_diag_free(&g->diag);
    memset(g, 0, sizeof *g);
}
