/* The `clapp` loss element: its parameters, and its loss form over the flat
 * (loss.c) and video (loss_video.c) implementations (loss_clapp.h). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "learning/loss_clapp.h"

static const clapp_param_desc loss_params[] = {
    {"mode", CLAPP_PARAM_ENUM, "clapp-s", 0, 0, "clapp-s|clapp|hinge-cpc|infonce",
     "clapp-s: hinge, pos+neg every step; clapp: pos or neg per lane (saccade); "
     "hinge-cpc: hinge at the top; infonce: CPC/GIM softmax"},
    {"steps", CLAPP_PARAM_INT, "12", 1, 4096, NULL, "prediction steps K (one W_k each)"},
    {"negatives", CLAPP_PARAM_INT, "10", 1, 100000, NULL, "negatives per positive (clapp mode uses 1)"},
    {"neg_draw", CLAPP_PARAM_ENUM, "per_step", 0, 0, "per_step|shared",
     "per_step: fresh negatives for every prediction step k (GIM, vision code); shared: one set "
     "per context for all k (checkpoints before loss version 2)"},
    {"neg_exclude_self", CLAPP_PARAM_BOOL, "false", 0, 1, NULL,
     "clapp mode: the negative lane is never the context's own lane (default: uniform over all "
     "lanes, as the reference)"},
    {"window", CLAPP_PARAM_INT, "128", 0, 100000000, NULL,
     "positives window: pairs come from one random window of this many steps (0: all)"},
    {"retro", CLAPP_PARAM_BOOL, "false", 0, 1, NULL,
     "independent W_retro for the context path (no weight transport)"},
    {"detach_context", CLAPP_PARAM_BOOL, "false", 0, 1, NULL,
     "no gradient through the context (block_grad variant)"},
    {"target", CLAPP_PARAM_STRING, "", 0, 0, NULL,
     "predict the output of this element instead of the input's own future"},
    {"grad_target", CLAPP_PARAM_ENUM, "auto", 0, 0, "auto|true|false",
     "with target=: also update the target element through its target role; auto: true for "
     "clapp-s and clapp (the appendix); infonce and hinge-cpc: false across modules (GIM), "
     "true inside the context's module (CPC end to end)"},
    {"context", CLAPP_PARAM_STRING, "", 0, 0, NULL,
     "direct feedback: take the context from this later layer (same rate and lanes), detached; "
     "targets stay this layer's output, only this layer and W_k learn"},
    {"form", CLAPP_PARAM_ENUM, "auto", 0, 0, "auto|flat|video",
     "video: [B, C, T, H, W] streams, W_k shared over positions, all other (clip, time) pairs "
     "negative (core/learning/loss_video.h); flat: one vector per step; auto: video for 5-D streams"},
    {"pool", CLAPP_PARAM_STRING, "shared", 0, 0, NULL,
     "video form: shared = no pooling, W_k [C, C] shared over positions (the default); P >= 1 = "
     "z and c averaged over non-overlapping PxP windows (G = ceil(H/P) ceil(W/P)), flattened "
     "channel-major, one FULL W_k [C*G, C*G] coupling positions (CLAPP++); frame or 0 = the "
     "whole-frame mean (G = 1). W holds K (C G)^2 floats, refused above 2^26 (256 MiB)"},
};

static const clapp_plugin_desc loss_clapp_desc = {
    .struct_size = sizeof(clapp_plugin_desc),
    .id = "clapp",
    .version = "1.0.0",
    .kind = CLAPP_KIND_LOSS,
    .help = "contrastive predictive loss on the module output; local update of the module's layers",
    .params = loss_params,
    .n_params = (int32_t)(sizeof loss_params / sizeof loss_params[0]),
};


/* form=auto|flat|video and grad_target=auto|true|false (enum indices) */
enum { LOSS_FORM_AUTO = 0, LOSS_FORM_FLAT = 1, LOSS_FORM_VIDEO = 2 };
enum { GRAD_TARGET_AUTO = 0, GRAD_TARGET_TRUE = 1, GRAD_TARGET_FALSE = 2 };

typedef struct loss_clapp {
    clapp_loss_params  p;
    clapp_loss        *flat;       /* form=flat ... */
    clapp_loss_video  *video;      /* ... or form=video */
    int                target;     /* target= names a layer */
    int                gt_auto;    /* grad_target=auto */
    int                sets_neg_draw;   /* the pipeline sets neg_draw= itself */
    const char        *name;
} loss_clapp;

static const clapp_param_value *value_of(const clapp_pipe_elem *pe, const char *key)
{
    return clapp_param_find(pe->values, pe->desc->n_params, key);
}

static int sets_key(const clapp_pipe_elem *pe, const char *key)
{
    for (int k = 0; k < pe->n_kv; k++)
        if (!strcmp(pe->kv[k].key, key))
            return 1;
    return 0;
}

/* Feature size per time step of a stream: C (audio) or C*H*W (video). */
static int64_t step_features(const clapp_stream_info *s)
{
    int64_t d = s->shape[1];
    for (int i = 3; i < s->ndim; i++)
        d *= s->shape[i];
    return d;
}

static void lc_destroy(void *self)
{
    loss_clapp *L = self;
    if (!L)
        return;
    clapp_loss_video_destroy(L->video);
    clapp_loss_destroy(L->flat);
    free(L);
}

static int lc_create(void **self, const clapp_loss_setup *s, char *err, size_t errlen)
{
    const clapp_pipe_elem *pe = s->pe;
    const clapp_stream_info *cs = s->c, *zs = s->z;
    const char *target = value_of(pe, "target")->s, *context = value_of(pe, "context")->s;
    loss_clapp *L;
    int64_t form, gt, pool = CLAPP_LOSS_VIDEO_POOL_SHARED;
    int rc;

    *self = NULL;
    if (s->feedback && value_of(pe, "retro")->i) {
        snprintf(err, errlen, "%s '%s': retro=true with context=%s: the context is detached, so "
                 "W_retro would never be used", pe->type, pe->name, context);
        return CLAPP_E_INVAL;
    }
    if (s->feedback && value_of(pe, "grad_target")->i == GRAD_TARGET_FALSE) {
        snprintf(err, errlen, "%s '%s': grad_target=false with context=%s: a feedback loss "
                 "trains its own layer (the target), nothing else", pe->type, pe->name, context);
        return CLAPP_E_INVAL;
    }
    L = calloc(1, sizeof *L);
    if (!L)
        return CLAPP_E_NOMEM;
    L->name = pe->name;
    L->target = s->target;
    L->sets_neg_draw = sets_key(pe, "neg_draw");
    clapp_loss_default_params(&L->p);
    L->p.mode = (clapp_loss_mode)value_of(pe, "mode")->i;
    L->p.steps = (int32_t)value_of(pe, "steps")->i;
    L->p.negatives = (int32_t)value_of(pe, "negatives")->i;
    L->p.window = (int32_t)value_of(pe, "window")->i;
    L->p.retro = (int)value_of(pe, "retro")->i;
    L->p.detach_context = (int)value_of(pe, "detach_context")->i;
    gt = value_of(pe, "grad_target")->i;
    L->gt_auto = gt == GRAD_TARGET_AUTO;
    L->p.grad_target = gt == GRAD_TARGET_TRUE;
    if (gt == GRAD_TARGET_AUTO)
        L->p.grad_target = clapp_loss_default_grad_target(L->p.mode, s->target && s->target_in_module);
    L->p.neg_draw = (clapp_loss_neg_draw)value_of(pe, "neg_draw")->i;
    L->p.neg_exclude_self = (int)value_of(pe, "neg_exclude_self")->i;
    L->p.seed = s->seed;
    *self = L;

    /* The context would get a zero gradient without any sign of it. */
    if (L->p.detach_context && target && *target) {
        snprintf(err, errlen, "%s '%s': detach_context=true with target=%s leaves the context "
                 "element without any gradient; use one of the two options, not both", pe->type,
                 pe->name, target);
        return CLAPP_E_INVAL;
    }
    if (s->feedback) {   /* targets z = the own layer, context c = the other layer, detached */
        L->p.grad_target = 1;
        L->p.detach_context = 1;
    }
    form = value_of(pe, "form")->i;
    if (form == LOSS_FORM_AUTO)
        form = cs->ndim == 5 && zs->ndim == 5 ? LOSS_FORM_VIDEO : LOSS_FORM_FLAT;
    if (form == LOSS_FORM_VIDEO && (cs->ndim != 5 || zs->ndim != 5 ||
                                    zs->shape[3] != cs->shape[3] || zs->shape[4] != cs->shape[4])) {
        snprintf(err, errlen, "%s '%s': form=video needs [B, C, T, H, W] streams of one spatial "
                 "size for context and target", pe->type, pe->name);
        return CLAPP_E_SHAPE;
    }
    /* pool= (video form only): shared W over positions, or pooled windows with a full W */
    {
        const clapp_param_value *pv = value_of(pe, "pool");
        char why[400];
        int isv = form == LOSS_FORM_VIDEO;
        rc = clapp_loss_video_pool_check(pv ? pv->s : NULL, L->p.steps, zs->shape[1], cs->shape[1],
                                         isv ? cs->shape[3] : 0, isv ? cs->shape[4] : 0, &pool, why,
                                         sizeof why);
        if (rc == CLAPP_OK && !isv && pool != CLAPP_LOSS_VIDEO_POOL_SHARED) {
            snprintf(why, sizeof why, "pool=%s applies to the video form only (this stream is "
                     "flat: leave pool=shared)", pv->s);
            rc = CLAPP_E_INVAL;
        }
        if (rc < 0) {
            snprintf(err, errlen, "%s '%s': %s", pe->type, pe->name, why);
            return rc;
        }
    }
    if (form == LOSS_FORM_VIDEO)
        rc = clapp_loss_video_create_pool(&L->video, &L->p, pool, zs->shape[1], cs->shape[1],
                                          cs->shape[3], cs->shape[4], (int32_t)cs->shape[0],
                                          cs->shape[2], s->host, pe->name);
    else
        rc = clapp_loss_create(&L->flat, &L->p, step_features(zs), step_features(cs),
                               (int32_t)cs->shape[0], cs->shape[2], s->host, pe->name);
    if (rc < 0)
        snprintf(err, errlen, "%s '%s': cannot create the loss (status %d)", pe->type, pe->name, rc);
    return rc;
}

static int lc_tensors(void *self, const clapp_named_tensor **list, int32_t *count)
{
    loss_clapp *L = self;
    return L->video ? clapp_loss_video_tensors(L->video, list, count)
                    : clapp_loss_tensors(L->flat, list, count);
}

static int lc_compute(void *self, const clapp_block *z, const clapp_block *c, clapp_tensor *grad_z,
                      clapp_tensor *grad_c, clapp_loss_stats *st)
{
    loss_clapp *L = self;
    return L->video ? clapp_loss_video_compute(L->video, z, c, grad_z, grad_c, st)
                    : clapp_loss_compute(L->flat, z, c, grad_z, grad_c, st);
}

static int lc_grad_target(const void *self)
{
    const loss_clapp *L = self;
    return L->p.grad_target;
}

/* Only the flat form draws per block (the video form's pairs are all fixed). */
static int lc_get_rng(const void *self, uint64_t state[4])
{
    const loss_clapp *L = self;
    if (!L->flat)
        return 0;
    clapp_loss_get_rng(L->flat, state);
    return 1;
}

static void lc_set_rng(void *self, const uint64_t state[4])
{
    loss_clapp *L = self;
    if (L->flat)
        clapp_loss_set_rng(L->flat, state);
}

/* Loss version 1: negatives shared over k, grad_target true in every mode.
 * The flat form takes the old defaults for the options the pipeline leaves
 * unset; the video form cannot change grad_target after creation. */
static int lc_loss_version(void *self, int version, int check_only, char *why, size_t whylen)
{
    loss_clapp *L = self;
    clapp_loss_params p = L->p;
    if (version >= 2)
        return CLAPP_OK;
    if (check_only) {
        if (L->video && L->target && L->gt_auto && !L->p.grad_target) {
            snprintf(why, whylen, "made before loss version 2, when grad_target defaulted to "
                     "true; set %s.grad_target=true (or false) explicitly to load it", L->name);
            return CLAPP_E_INVAL;
        }
        return CLAPP_OK;
    }
    if (!L->flat)
        return CLAPP_OK;
    if (!L->sets_neg_draw)
        p.neg_draw = CLAPP_LOSS_NEG_SHARED;
    if (L->gt_auto)
        p.grad_target = 1;
    if (clapp_loss_update_params(L->flat, &p) < 0) {
        snprintf(why, whylen, "cannot give loss element '%s' the defaults of loss version %d",
                 L->name, version);
        return CLAPP_E_INVAL;
    }
    L->p = p;
    return CLAPP_OK;
}

const clapp_loss_form clapp_loss_form_clapp = {
    .desc = &loss_clapp_desc,
    .create = lc_create,
    .destroy = lc_destroy,
    .tensors = lc_tensors,
    .compute = lc_compute,
    .grad_target = lc_grad_target,
    .get_rng = lc_get_rng,
    .set_rng = lc_set_rng,
    .loss_version = lc_loss_version,
};

clapp_loss *clapp_loss_clapp_flat(const clapp_loss_form *form, void *self)
{
    return form == &clapp_loss_form_clapp && self ? ((loss_clapp *)self)->flat : NULL;
}

clapp_loss_video *clapp_loss_clapp_video(const clapp_loss_form *form, void *self)
{
    return form == &clapp_loss_form_clapp && self ? ((loss_clapp *)self)->video : NULL;
}

const clapp_loss_params *clapp_loss_clapp_params(const clapp_loss_form *form, const void *self)
{
    return form == &clapp_loss_form_clapp && self ? &((const loss_clapp *)self)->p : NULL;
}
