/* The host API (include/clapp/clapp.h) over the pipeline, graph, source and
 * checkpoint code: one handle owns a registry, a resolved pipeline, its
 * data (a manifest source, or the lanes the caller pushes into) and the
 * live graph. */
#define _GNU_SOURCE
#include "clapp/clapp.h"

#include <dlfcn.h>
#include <libavutil/channel_layout.h>
#include <libavutil/samplefmt.h>
#include <libswresample/swresample.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "storage/checkpoint.h"
#include "graph/graph.h"
#include "media/manifest.h"
#include "graph/pipeline.h"
#include "graph/registry.h"
#include "media/source.h"

#ifndef CLAPP_VERSION_STRING
#define CLAPP_VERSION_STRING "0.0.0"
#endif

enum { MODE_NONE = 0, MODE_MANIFEST = 1, MODE_PUSH = 2 };
enum { LANE_IDLE = 0, LANE_OPEN = 1, LANE_ENDED = 2 };

/* One lane of push mode: the frames the caller pushed and not yet processed. */
typedef struct push_lane {
    int     state;     /* LANE_* */
    char   *name;      /* the stream's key; kept until the next begin (blocks point at it) */
    int64_t seq_id;
    int64_t pts;       /* frames already delivered */
    int     first;     /* the next block starts the stream */
    float  *buf;       /* [n, step_floats] */
    int64_t n, cap;    /* frames buffered, capacity in frames */
    SwrContext *swr;   /* audio pushed at another rate: libswresample, as the decoder */
} push_lane;

struct clapp_pipeline {
    clapp_options       opt;
    clapp_host          host;
    clapp_registry      reg;
    int                 have_reg;
    clapp_pipeline_desc pd;
    clapp_labelset      labels;    /* phones of .phn alignments: the CMU-41 set */
    clapp_labelset      classes;   /* class names of the manifest's label column */
    clapp_manifest      manifest;
    clapp_source       *src;
    clapp_source_params sp;
    int                 mode;      /* MODE_* */
    int                 started;   /* manifest: the decode thread runs */
    int                 stepped;   /* a block has been processed since open */
    int                 learn_capable;
    int                 created;   /* create got through: the pipeline is resolved */
    int64_t             skip_blocks;
    int64_t             steps;
    clapp_stream_info   info;      /* the source's stream */
    clapp_graph         graph;
    int                 have_graph;
    const clapp_block  *last;      /* the source block of the last step */
    int32_t             shard, shards;   /* data parallelism (set_data_parallel) */
    clapp_grad_hook     grad_hook;
    void               *grad_user;
    clapp_grad         *grads;     /* with a gradient hook: every optimizer slot's gradient */
    int32_t             n_grads;
    /* push mode */
    clapp_block         pblk;
    push_lane          *pl;
    int64_t             step_floats;   /* floats per frame: C * H * W (audio: 1) */
    int64_t             next_seq;
    int               (*interrupt)(void *user);   /* clapp_pipeline_set_interrupt */
    void               *interrupt_user;
    char                err[4096];
};

/* ---- errors and logging ----------------------------------------------------- */

static int fail(clapp_pipeline *p, int rc, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 3, 4)))
#endif
    ;
static int fail(clapp_pipeline *p, int rc, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(p->err, sizeof p->err, fmt, ap);
    va_end(ap);
    return rc;
}

static void api_log(void *user, int level, const char *who, const char *fmt, va_list ap)
{
    const clapp_pipeline *p = user;
    char msg[4096];
    if (level > p->opt.log_level)
        return;
    vsnprintf(msg, sizeof msg, fmt, ap);
    if (p->opt.log) {
        p->opt.log(p->opt.log_user, level, who, msg);
        return;
    }
    /* One fprintf per line, so lines from the decode thread do not interleave. */
    fprintf(stderr, "clapp: %s%s%s%s\n", level == CLAPP_LOG_ERROR ? "error: " :
            level == CLAPP_LOG_WARNING ? "warning: " : "", who ? who : "", who ? ": " : "", msg);
}

const char *clapp_version(void)
{
    return CLAPP_VERSION_STRING;
}

const char *clapp_status_string(int status)
{
    switch (status) {
    case CLAPP_OK: return "ok";
    case CLAPP_E_INVAL: return "invalid argument";
    case CLAPP_E_NOMEM: return "out of memory";
    case CLAPP_E_IO: return "input/output error";
    case CLAPP_E_FORMAT: return "malformed data";
    case CLAPP_E_SHAPE: return "shape not accepted";
    case CLAPP_E_UNSUPPORTED: return "not supported";
    case CLAPP_E_STATE: return "call out of order";
    case CLAPP_E_ABI: return "plugin ABI mismatch";
    case CLAPP_E_NOTFOUND: return "not found";
    case CLAPP_E_INTERNAL: return "internal error";
    default: return status > 0 ? "ok" : "unknown status";
    }
}

void clapp_options_init(clapp_options *o)
{
    clapp_optim_params op;
    clapp_optim_default_params(&op);
    memset(o, 0, sizeof *o);
    o->struct_size = sizeof *o;
    o->seed = 1;
    o->learn = 0;
    o->lr = -1;
    o->adam_eps = op.eps;
    o->adam_beta1 = op.beta1;
    o->adam_beta2 = op.beta2;
    o->log_level = CLAPP_LOG_WARNING;
}

void clapp_free(void *ptr)
{
    free(ptr);
}

const char *clapp_pipeline_error(const clapp_pipeline *p)
{
    return p ? p->err : "no pipeline (NULL handle)";
}

/* ---- create ------------------------------------------------------------------ */

/* The plugin folder beside this library: LIBDIR/clapp/plugins (malloc'd). */
static char *own_plugin_dir(void)
{
    Dl_info di;
    if (!dladdr((void *)clapp_version, &di) || !di.dli_fname)
        return NULL;
    return clapp_registry_dir_beside(di.dli_fname, "clapp/plugins");
}

/* Options and host (logging) of a new handle. */
static int init_host(clapp_pipeline *p, const clapp_options *opt)
{
    clapp_options_init(&p->opt);
    if (opt) {
        size_t n = opt->struct_size < sizeof p->opt ? opt->struct_size : sizeof p->opt;
        if (n < offsetof(clapp_options, log_user) + sizeof(void *))
            return fail(p, CLAPP_E_INVAL, "clapp_options.struct_size %u: fill the options with "
                        "clapp_options_init", (unsigned)opt->struct_size);
        memcpy(&p->opt, opt, n);
    }
    p->host.struct_size = sizeof p->host;
    p->host.user = p;
    p->host.log = api_log;
    return CLAPP_OK;
}

/* Options, host and the element registry (built-ins and the search path). */
static int init_host_registry(clapp_pipeline *p, const clapp_options *opt)
{
    char *dir;
    int rc = init_host(p, opt);
    if (rc < 0)
        return rc;
    dir = own_plugin_dir();
    rc = clapp_registry_init_search(&p->reg, &p->host, dir);
    free(dir);
    p->have_reg = 1;
    if (rc < 0)
        return fail(p, rc, "cannot set up the element registry (status %d)", rc);
    return CLAPP_OK;
}

static int create_common(clapp_pipeline **out, const char *text, const char *path,
                         const char *const *overrides, int n_overrides, const clapp_options *opt)
{
    clapp_pipeline *p;
    int rc;

    if (!out)
        return CLAPP_E_INVAL;
    *out = p = calloc(1, sizeof *p);
    if (!p)
        return CLAPP_E_NOMEM;
    if ((rc = init_host_registry(p, opt)) < 0)
        return rc;
    if (clapp_labelset_init_cmu41(&p->labels) < 0)
        return fail(p, CLAPP_E_NOMEM, "out of memory");
    if (path)
        rc = clapp_pipedesc_parse_file(&p->pd, path, p->err, sizeof p->err);
    else if (text)
        rc = clapp_pipedesc_parse(&p->pd, text, NULL, p->err, sizeof p->err);
    else
        return fail(p, CLAPP_E_INVAL, "no pipeline text or file given");
    if (rc < 0)
        return rc;
    for (int i = 0; i < n_overrides; i++) {
        if (!overrides || !overrides[i])
            return fail(p, CLAPP_E_INVAL, "override %d is NULL", i);
        if ((rc = clapp_pipedesc_set(&p->pd, overrides[i], p->err, sizeof p->err)) < 0)
            return rc;
    }
    if ((rc = clapp_pipedesc_resolve(&p->pd, &p->reg, p->err, sizeof p->err)) < 0)
        return rc;
    if (p->pd.n < 1 || p->pd.elems[0].desc->kind != CLAPP_KIND_SOURCE)
        return fail(p, CLAPP_E_FORMAT, "%s:%d:%d: a pipeline starts with 'source'", p->pd.file,
                    p->pd.n ? p->pd.elems[0].line : 1, p->pd.n ? p->pd.elems[0].col : 1);
    p->shards = 1;
    p->learn_capable = p->opt.learn != 0;
    p->created = 1;
    return CLAPP_OK;
}

int clapp_pipeline_create_from_text(clapp_pipeline **p, const char *text,
                                    const char *const *overrides, int n_overrides,
                                    const clapp_options *opt)
{
    return create_common(p, text ? text : "", NULL, overrides, n_overrides, opt);
}

int clapp_pipeline_create_from_file(clapp_pipeline **p, const char *path,
                                    const char *const *overrides, int n_overrides,
                                    const clapp_options *opt)
{
    if (!path) {
        int rc = create_common(p, "", NULL, NULL, 0, opt);
        return rc < 0 ? rc : fail(*p, CLAPP_E_INVAL, "no pipeline file given");
    }
    return create_common(p, NULL, path, overrides, n_overrides, opt);
}

/* A handle that got through create. */
static int check_handle(clapp_pipeline *p)
{
    if (!p)
        return CLAPP_E_INVAL;
    if (!p->created)
        return fail(p, CLAPP_E_STATE, "the pipeline was not created (see the error of create)");
    return CLAPP_OK;
}

static int find_element(clapp_pipeline *p, const char *name)
{
    int i = name ? clapp_pipedesc_find(&p->pd, name) : -1;
    if (i < 0) {
        size_t used = (size_t)snprintf(p->err, sizeof p->err, "%s: no element named '%s'; elements:",
                                       p->pd.file, name ? name : "(null)");
        for (int k = 0; k < p->pd.n && used < sizeof p->err; k++)
            used += (size_t)snprintf(p->err + used, sizeof p->err - used, " %s", p->pd.elems[k].name);
        return CLAPP_E_NOTFOUND;
    }
    return i;
}

int clapp_pipeline_add_element(clapp_pipeline *p, const char *after, const char *type,
                               const char *name, const char *const *kv, int n_kv)
{
    int rc = check_handle(p), at;
    if (rc < 0)
        return rc;
    if (p->mode != MODE_NONE)
        return fail(p, CLAPP_E_STATE, "add_element '%s': the pipeline is open already; insert before "
                    "opening it", name ? name : "(null)");
    if (!type || !name || n_kv < 0 || (n_kv > 0 && !kv))
        return fail(p, CLAPP_E_INVAL, "add_element: type, name and the key/value list are needed");
    if ((at = find_element(p, after)) < 0)
        return at;
    if ((rc = clapp_pipedesc_insert(&p->pd, at, type, name, kv, n_kv, p->err, sizeof p->err)) < 0)
        return rc;
    /* the element is in; a pipeline that does not resolve with it cannot run */
    if ((rc = clapp_pipedesc_resolve(&p->pd, &p->reg, p->err, sizeof p->err)) < 0)
        p->created = 0;
    return rc;
}

int clapp_pipeline_override(clapp_pipeline *p, const char *assignment)
{
    int rc = check_handle(p);
    if (rc < 0)
        return rc;
    if (p->mode != MODE_NONE)
        return fail(p, CLAPP_E_STATE, "override %s: the pipeline is open already; override before "
                    "opening it", assignment ? assignment : "(null)");
    if (!assignment)
        return fail(p, CLAPP_E_INVAL, "override: NULL assignment");
    if ((rc = clapp_pipedesc_set(&p->pd, assignment, p->err, sizeof p->err)) < 0)
        return rc;
    if ((rc = clapp_pipedesc_resolve(&p->pd, &p->reg, p->err, sizeof p->err)) < 0)
        p->created = 0;
    return rc;
}

int clapp_pipeline_set_data_parallel(clapp_pipeline *p, int32_t shard, int32_t shards,
                                     clapp_grad_hook hook, void *user)
{
    int rc = check_handle(p);
    if (rc < 0)
        return rc;
    if (p->mode != MODE_NONE)
        return fail(p, CLAPP_E_STATE, "set_data_parallel: the pipeline is open already; set it before "
                    "opening");
    if (shards < 1 || shard < 0 || shard >= shards)
        return fail(p, CLAPP_E_INVAL, "set_data_parallel: shard %d of %d: expected 0 <= shard < shards",
                    shard, shards);
    p->shard = shard;
    p->shards = shards;
    p->grad_hook = hook;
    p->grad_user = user;
    return CLAPP_OK;
}

int clapp_pipeline_text(const clapp_pipeline *p, char **text)
{
    int rc = check_handle((clapp_pipeline *)p);
    if (rc < 0)
        return rc;
    if (!text)
        return fail((clapp_pipeline *)p, CLAPP_E_INVAL, "text: NULL output pointer");
    *text = clapp_pipedesc_to_text(&p->pd);
    return *text ? CLAPP_OK : fail((clapp_pipeline *)p, CLAPP_E_NOMEM, "out of memory");
}

int clapp_pipeline_element_count(const clapp_pipeline *p, int *n)
{
    int rc = check_handle((clapp_pipeline *)p);
    if (rc < 0)
        return rc;
    if (!n)
        return fail((clapp_pipeline *)p, CLAPP_E_INVAL, "element_count: NULL output pointer");
    *n = p->pd.n;
    return CLAPP_OK;
}

int clapp_pipeline_element(const clapp_pipeline *p, int i, const char **name, const char **type,
                           int *kind)
{
    int rc = check_handle((clapp_pipeline *)p);
    if (rc < 0)
        return rc;
    if (i < 0 || i >= p->pd.n)
        return fail((clapp_pipeline *)p, CLAPP_E_INVAL, "element %d: the pipeline has %d elements",
                    i, p->pd.n);
    if (name)
        *name = p->pd.elems[i].name;
    if (type)
        *type = p->pd.elems[i].type;
    if (kind)
        *kind = (int)p->pd.elems[i].desc->kind;
    return CLAPP_OK;
}

int clapp_pipeline_element_values(const clapp_pipeline *p, const char *name,
                                  const clapp_plugin_desc **desc, const clapp_param_value **values)
{
    clapp_pipeline *q = (clapp_pipeline *)p;
    int rc = check_handle(q), i;
    if (rc < 0)
        return rc;
    if ((i = find_element(q, name)) < 0)
        return i;
    if (desc)
        *desc = p->pd.elems[i].desc;
    if (values)
        *values = p->pd.elems[i].values;
    return CLAPP_OK;
}

int clapp_pipeline_add_class(clapp_pipeline *p, const char *name)
{
    int rc = check_handle(p);
    if (rc < 0)
        return rc;
    if (p->mode != MODE_NONE)
        return fail(p, CLAPP_E_STATE, "add_class: the pipeline is open already");
    if (!name || !*name)
        return fail(p, CLAPP_E_INVAL, "add_class: an empty class name");
    rc = clapp_labelset_add(&p->classes, name);
    return rc < 0 ? fail(p, rc, "add_class %s: out of memory", name) : CLAPP_OK;
}

int clapp_pipeline_class_count(const clapp_pipeline *p, int *n)
{
    int rc = check_handle((clapp_pipeline *)p);
    if (rc < 0)
        return rc;
    if (!n)
        return fail((clapp_pipeline *)p, CLAPP_E_INVAL, "class_count: NULL output pointer");
    *n = p->classes.n;
    return CLAPP_OK;
}

int clapp_pipeline_class_name(const clapp_pipeline *p, int i, const char **name)
{
    int rc = check_handle((clapp_pipeline *)p);
    if (rc < 0)
        return rc;
    if (!name || i < 0 || i >= p->classes.n)
        return fail((clapp_pipeline *)p, CLAPP_E_INVAL, "class %d: there are %d", i, p->classes.n);
    *name = p->classes.names[i];
    return CLAPP_OK;
}

/* ---- open ---------------------------------------------------------------------- */

static int create_graph(clapp_pipeline *p)
{
    clapp_graph_params gp;
    int rc;
    clapp_graph_default_params(&gp);
    gp.learn = p->opt.learn != 0;
    gp.seed = p->opt.seed;
    if (p->opt.lr >= 0)
        gp.optim.lr = p->opt.lr;
    if (gp.learn) {
        gp.optim.eps = p->opt.adam_eps;
        gp.optim.beta1 = p->opt.adam_beta1;
        gp.optim.beta2 = p->opt.adam_beta2;
        gp.optim.warmup = p->opt.warmup;
        gp.optim.clip = p->opt.clip;
        gp.optim.weight_decay = p->opt.weight_decay;
        gp.optim.decoupled_wd = p->opt.weight_decay > 0;
    }
    gp.diag_every = p->opt.diag_every;
    gp.shard = p->shard;
    gp.shards = p->shards;
    rc = clapp_graph_create(&p->graph, &p->pd, &p->info, &gp, &p->host, p->err, sizeof p->err);
    p->have_graph = 1;
    if (rc < 0 || !gp.learn || !p->grad_hook)
        return rc;
    /* What the gradient hook is handed: the optimizer's slots, in order. */
    p->n_grads = p->graph.optim.n;
    p->grads = calloc((size_t)p->n_grads + 1, sizeof *p->grads);
    if (!p->grads)
        return fail(p, CLAPP_E_NOMEM, "out of memory");
    for (int32_t i = 0; i < p->n_grads; i++) {
        const clapp_optim_slot *sl = &p->graph.optim.slots[i];
        p->grads[i].name = sl->name;
        p->grads[i].grad = sl->grad->data;
        p->grads[i].value = sl->value->data;
        p->grads[i].numel = clapp_tensor_numel(sl->value);
    }
    return CLAPP_OK;
}

static int check_open(clapp_pipeline *p)
{
    int rc = check_handle(p);
    if (rc < 0)
        return rc;
    if (p->mode != MODE_NONE)
        return fail(p, CLAPP_E_STATE, "%s: the pipeline is open already (one open per handle)",
                    p->pd.file);
    clapp_source_params_from_values(&p->sp, p->pd.elems[0].values, p->pd.elems[0].desc->n_params);
    p->sp.seed = p->opt.seed;
    p->sp.shard = p->shard;
    p->sp.shards = p->shards;
    p->sp.classes = &p->classes;
    return CLAPP_OK;
}

static int open_manifest(clapp_pipeline *p, const char *manifest, int epochs, int as_is);

int clapp_pipeline_open_manifest(clapp_pipeline *p, const char *manifest, int epochs)
{
    return open_manifest(p, manifest, epochs, 0);
}

int clapp_pipeline_open_files(clapp_pipeline *p, const char *manifest)
{
    return open_manifest(p, manifest, 1, 1);
}

static int open_manifest(clapp_pipeline *p, const char *manifest, int epochs, int as_is)
{
    int rc = check_open(p);
    if (rc < 0)
        return rc;
    if (as_is) {
        p->sp.mode = CLAPP_SOURCE_STREAM;
        p->sp.shuffle = 0;
        memset(&p->sp.aug, 0, sizeof p->sp.aug);
    }
    if (!manifest)
        return fail(p, CLAPP_E_INVAL, "open_manifest: no manifest given");
    if (epochs < 1)
        return fail(p, CLAPP_E_INVAL, "open_manifest: epochs %d: expected at least 1", epochs);
    p->sp.decode.interrupt = p->interrupt;
    p->sp.decode.interrupt_user = p->interrupt_user;
    if ((rc = clapp_manifest_load(&p->manifest, manifest, p->err, sizeof p->err)) < 0)
        return rc;
    p->sp.epochs = epochs;
    rc = clapp_source_create(&p->src, &p->sp, &p->manifest, &p->labels, &p->host);
    if (rc < 0)
        return fail(p, rc, "%s: cannot set up the source for %s (status %d; see the log)",
                    p->pd.file, manifest, rc);
    clapp_source_info(p->src, &p->info);
    p->mode = MODE_MANIFEST;
    return create_graph(p);
}

int clapp_pipeline_set_interrupt(clapp_pipeline *p, int (*interrupt)(void *user), void *user)
{
    int rc = check_handle(p);
    if (rc < 0)
        return rc;
    if (p->mode != MODE_NONE)
        return fail(p, CLAPP_E_STATE, "set_interrupt: the pipeline is open already; set it before opening");
    p->interrupt = interrupt;
    p->interrupt_user = user;
    return CLAPP_OK;
}

int clapp_pipeline_open_push(clapp_pipeline *p, int32_t lanes)
{
    int rc = check_open(p);
    int64_t T;
    if (rc < 0)
        return rc;
    if (lanes < 0 || lanes > 4096)
        return fail(p, CLAPP_E_INVAL, "open_push: lanes %d: expected 0 (the source's) to 4096", lanes);
    if (lanes == 0)
        lanes = p->sp.lanes;
    T = p->sp.block;
    memset(&p->info, 0, sizeof p->info);
    if (p->sp.decode.kind == CLAPP_MEDIA_VIDEO) {
        p->info.ndim = 5;
        p->info.shape[1] = p->sp.decode.channels;
        p->info.shape[3] = p->sp.decode.height;
        p->info.shape[4] = p->sp.decode.width;
        p->info.rate = p->sp.decode.fps;
        p->step_floats = (int64_t)p->sp.decode.channels * p->sp.decode.height * p->sp.decode.width;
    } else {
        p->info.ndim = 3;
        p->info.shape[1] = 1;
        p->info.rate = p->sp.decode.rate;
        p->step_floats = 1;
    }
    p->info.shape[0] = lanes;
    p->info.shape[2] = T;
    p->pl = calloc((size_t)lanes, sizeof *p->pl);
    p->pblk.lane = calloc((size_t)lanes, sizeof *p->pblk.lane);
    if (!p->pl || !p->pblk.lane ||
        clapp_tensor_alloc_shape(&p->pblk.x, p->info.ndim, p->info.shape) < 0)
        return fail(p, CLAPP_E_NOMEM, "open_push: out of memory for a block of %d x %lld frames",
                    lanes, (long long)T);
    p->pblk.lanes = lanes;
    p->pblk.rate = p->info.rate;
    p->pblk.label_rate = 0;
    p->mode = MODE_PUSH;
    return create_graph(p);
}

/* ---- push ------------------------------------------------------------------------ */

static int check_lane(clapp_pipeline *p, int32_t lane, const char *call)
{
    int rc = check_handle(p);
    if (rc < 0)
        return rc;
    if (p->mode != MODE_PUSH || !p->have_graph)
        return fail(p, CLAPP_E_STATE, "%s: the pipeline is not open in push mode "
                    "(clapp_pipeline_open_push)", call);
    if (lane < 0 || lane >= p->pblk.lanes)
        return fail(p, CLAPP_E_INVAL, "%s: lane %d: the pipeline has lanes 0 to %d", call, lane,
                    p->pblk.lanes - 1);
    return CLAPP_OK;
}

int clapp_pipeline_begin(clapp_pipeline *p, int32_t lane, const char *name, double rate)
{
    int rc = check_lane(p, lane, "begin");
    push_lane *L;
    char *copy;
    if (rc < 0)
        return rc;
    L = &p->pl[lane];
    if (L->state != LANE_IDLE)
        return fail(p, CLAPP_E_STATE, "begin: lane %d still has a stream ('%s'%s); end it and step "
                    "until its frames are processed", lane, L->name ? L->name : "",
                    L->state == LANE_ENDED ? ", ended, frames left" : ", open");
    if (!(fabs(rate - p->info.rate) <= 1e-9 * p->info.rate)) {
        /* audio: resampled to the stream's rate as the decoder does (libswresample,
         * default options); video frames are taken at the stream's fps only */
        AVChannelLayout mono = AV_CHANNEL_LAYOUT_MONO;
        if (p->info.ndim == 5)
            return fail(p, CLAPP_E_INVAL, "begin: lane %d: frames at %g per second, but %s's stream runs "
                        "at %g fps (push mode does not convert frame rates yet; set %s.fps=%g)", lane, rate,
                        p->pd.elems[0].name, p->info.rate, p->pd.elems[0].name, rate);
        if (!(rate >= 1 && rate <= 1e7 && rate == floor(rate)))
            return fail(p, CLAPP_E_INVAL, "begin: lane %d: audio at %g Hz: expected a whole number of "
                        "samples per second in [1, 10000000]", lane, rate);
        swr_free(&L->swr);
        rc = swr_alloc_set_opts2(&L->swr, &mono, AV_SAMPLE_FMT_FLT, (int)p->info.rate, &mono,
                                 AV_SAMPLE_FMT_FLT, (int)rate, 0, NULL);
        if (rc >= 0)
            rc = swr_init(L->swr);
        if (rc < 0) {
            swr_free(&L->swr);
            return fail(p, CLAPP_E_UNSUPPORTED, "begin: lane %d: cannot resample %g Hz to %g Hz "
                        "(libswresample status %d)", lane, rate, p->info.rate, rc);
        }
    } else {
        swr_free(&L->swr);
    }
    if (!(copy = strdup(name && *name ? name : "stream")))
        return fail(p, CLAPP_E_NOMEM, "begin: out of memory");
    free(L->name);
    L->name = copy;
    L->state = LANE_OPEN;
    L->seq_id = p->next_seq++;
    L->pts = 0;
    L->first = 1;
    L->n = 0;
    return CLAPP_OK;
}

/* Room for `more` frames after the buffered ones. */
static int lane_reserve(clapp_pipeline *p, int32_t lane, int64_t more)
{
    push_lane *L = &p->pl[lane];
    int64_t cap = L->cap ? L->cap : 1024;
    float *buf;
    if (L->n + more <= L->cap)
        return CLAPP_OK;
    while (cap < L->n + more)
        cap *= 2;
    buf = realloc(L->buf, (size_t)(cap * p->step_floats) * sizeof *buf);
    if (!buf)
        return fail(p, CLAPP_E_NOMEM, "push: lane %d: out of memory for %lld frames", lane, (long long)cap);
    L->buf = buf;
    L->cap = cap;
    return CLAPP_OK;
}

/* Resample n samples (NULL: drain the delay line) into the lane's buffer. */
static int lane_resample(clapp_pipeline *p, int32_t lane, const float *data, int64_t n)
{
    push_lane *L = &p->pl[lane];
    for (;;) {
        int in = n > (1 << 20) ? 1 << 20 : (int)n;
        int want = swr_get_out_samples(L->swr, data ? in : 0), got, rc;
        const uint8_t *src = (const uint8_t *)data;
        uint8_t *dst;
        if (want < 0)
            return fail(p, CLAPP_E_INTERNAL, "push: lane %d: resampler failed (status %d)", lane, want);
        if (!data && want <= 0)
            want = 256;
        if ((rc = lane_reserve(p, lane, want)) < 0)
            return rc;
        dst = (uint8_t *)(L->buf + L->n);
        got = swr_convert(L->swr, &dst, want, data ? &src : NULL, data ? in : 0);
        if (got < 0)
            return fail(p, CLAPP_E_INTERNAL, "push: lane %d: resampler failed (status %d)", lane, got);
        L->n += got;
        if (data) {
            data += in;
            n -= in;
            if (n == 0)
                return CLAPP_OK;
        } else if (got == 0) {
            return CLAPP_OK;
        }
    }
}

int clapp_pipeline_push(clapp_pipeline *p, int32_t lane, const float *data, int64_t n)
{
    int rc = check_lane(p, lane, "push");
    push_lane *L;
    if (rc < 0)
        return rc;
    L = &p->pl[lane];
    if (L->state != LANE_OPEN)
        return fail(p, CLAPP_E_STATE, "push: lane %d has no open stream (clapp_pipeline_begin)", lane);
    if (n < 0 || (n > 0 && !data))
        return fail(p, CLAPP_E_INVAL, "push: lane %d: %lld frames from %s", lane, (long long)n,
                    data ? "a buffer" : "NULL");
    if (n == 0)
        return CLAPP_OK;
    if (L->swr)
        return lane_resample(p, lane, data, n);
    if ((rc = lane_reserve(p, lane, n)) < 0)
        return rc;
    memcpy(L->buf + L->n * p->step_floats, data, (size_t)(n * p->step_floats) * sizeof *data);
    L->n += n;
    return CLAPP_OK;
}

int clapp_pipeline_end(clapp_pipeline *p, int32_t lane)
{
    int rc = check_lane(p, lane, "end");
    push_lane *L;
    if (rc < 0)
        return rc;
    L = &p->pl[lane];
    if (L->state != LANE_OPEN)
        return fail(p, CLAPP_E_STATE, "end: lane %d has no open stream", lane);
    if (L->swr) {   /* the resampler's delay line, as the decoder flushes it at the end */
        rc = lane_resample(p, lane, NULL, 0);
        swr_free(&L->swr);
        if (rc < 0)
            return rc;
    }
    /* An open lane keeps more than a block buffered, so n == 0 means nothing was delivered. */
    L->state = L->n > 0 ? LANE_ENDED : LANE_IDLE;
    return CLAPP_OK;
}

/* Fill the push block from the lanes; 0 if no block can be made yet. */
static int fill_push_block(clapp_pipeline *p)
{
    const int64_t T = p->info.shape[2], C = p->info.shape[1], hw = p->step_floats / C;
    const float gain = p->sp.gain, offset = p->sp.offset;
    int any = 0;
    for (int32_t b = 0; b < p->pblk.lanes; b++) {
        if (p->pl[b].state == LANE_OPEN && p->pl[b].n <= T)
            return 0;   /* lockstep: wait for this lane's frames */
        any |= p->pl[b].state != LANE_IDLE;
    }
    if (!any)
        return 0;
    clapp_tensor_zero(&p->pblk.x);
    for (int32_t b = 0; b < p->pblk.lanes; b++) {
        push_lane *L = &p->pl[b];
        clapp_lane *ln = &p->pblk.lane[b];
        float *x = p->pblk.x.data + (size_t)(b * C * T * hw);
        int64_t take;
        memset(ln, 0, sizeof *ln);
        ln->class_label = -1;
        if (L->state == LANE_IDLE) {
            ln->seq_id = -1;
            continue;
        }
        take = L->n < T ? L->n : T;
        /* pushed frames are [C, H, W]; the lane is [C, T, H, W] */
        for (int64_t c = 0; c < C; c++)
            for (int64_t t = 0; t < take; t++) {
                float *dst = x + (c * T + t) * hw;
                const float *src = L->buf + t * p->step_floats + c * hw;
                if (gain != 1.0f || offset != 0.0f)
                    for (int64_t i = 0; i < hw; i++)
                        dst[i] = gain * src[i] + offset;
                else
                    memcpy(dst, src, (size_t)hw * sizeof *dst);
            }
        ln->seq_id = L->seq_id;
        ln->seq_name = L->name;
        ln->flags = (L->first ? CLAPP_LANE_SEQ_START : 0u) |
                    (L->state == LANE_ENDED && take == L->n ? CLAPP_LANE_SEQ_END : 0u);
        ln->len = (int32_t)take;
        ln->pts = L->pts;
        L->first = 0;
        L->pts += take;
        L->n -= take;
        memmove(L->buf, L->buf + take * p->step_floats, (size_t)(L->n * p->step_floats) * sizeof *L->buf);
        if (ln->flags & CLAPP_LANE_SEQ_END)
            L->state = LANE_IDLE;
    }
    return 1;
}

/* ---- run -------------------------------------------------------------------------- */

static int check_running(clapp_pipeline *p, const char *call)
{
    int rc = check_handle(p);
    if (rc < 0)
        return rc;
    if (p->mode == MODE_NONE || !p->have_graph)
        return fail(p, CLAPP_E_STATE, "%s: the pipeline is not open (clapp_pipeline_open_manifest "
                    "or clapp_pipeline_open_push)", call);
    return CLAPP_OK;
}

/* Start decoding; on resume, decode and drop the blocks already learned from:
 * the source is a function of (seed, epoch, manifest), so this lands where
 * the checkpoint was taken. The dropped blocks are not processed: their
 * steps do not count (run_info's steps, the media seconds of `clapp train`). */
static int start_source(clapp_pipeline *p)
{
    const clapp_block *blk = NULL;
    int rc;
    if ((rc = clapp_source_start(p->src)) < 0)
        return fail(p, rc, "cannot start decoding (status %d)", rc);
    p->started = 1;
    for (int64_t k = 0; k < p->skip_blocks; k++) {
        rc = clapp_source_next(p->src, &blk);
        if (rc <= 0 && clapp_source_interrupted(p->src))
            return fail(p, CLAPP_E_IO, "resume interrupted while skipping to block %lld of the checkpoint "
                        "(see the warning above)", (long long)p->skip_blocks);
        /* Sharded: every step counts on every process, so a process whose
         * share ended earlier simply has nothing left. */
        if (rc == 0 && p->shards > 1)
            break;
        if (rc <= 0)
            return fail(p, rc < 0 ? rc : CLAPP_E_INVAL, "cannot resume: the data ends before block %lld "
                        "of the checkpoint (another manifest, --epochs or --seed?)", (long long)p->skip_blocks);
    }
    return CLAPP_OK;
}

/* The gradients of this step through the gradient hook; *count: in, the
 * blocks of this process (0 or 1); out, the blocks the hook combined. */
static int run_grad_hook(clapp_pipeline *p, int64_t *count)
{
    int rc = p->grad_hook(p->grad_user, p->grads, p->n_grads, count);
    if (rc < 0)
        return fail(p, rc, "the gradient hook failed (status %d: %s)", rc, clapp_status_string(rc));
    return CLAPP_OK;
}

int clapp_pipeline_step(clapp_pipeline *p)
{
    const clapp_block *blk = NULL;
    const int hook = p && p->grads && p->graph.p.learn;
    int64_t count = 1;
    int rc = check_running(p, "step");
    if (rc < 0)
        return rc;
    if (p->mode == MODE_MANIFEST) {
        if (!p->started && (rc = start_source(p)) < 0)
            return rc;
        rc = clapp_source_next(p->src, &blk);
        if (rc < 0)
            return fail(p, rc, "the source failed (status %d; see the log)", rc);
        if (rc == 0) {
            p->stepped = 0;   /* the last block went back to the source */
            if (!hook)
                return 0;
            /* Out of data: zero gradients, counted as none, while others learn. */
            count = 0;
            clapp_optim_zero_grad(&p->graph.optim);
            if ((rc = run_grad_hook(p, &count)) < 0)
                return rc;
            if (count <= 0)
                return 0;
            clapp_graph_apply(&p->graph);
            return 2;
        }
    } else {
        if (!fill_push_block(p))
            return 0;
        blk = &p->pblk;
    }
    if ((rc = clapp_graph_compute(&p->graph, blk, p->err, sizeof p->err)) < 0)
        return rc;
    for (int32_t b = 0; b < blk->lanes; b++)
        p->steps += blk->lane[b].len;
    p->last = blk;
    p->stepped = 1;
    if (hook && (rc = run_grad_hook(p, &count)) < 0)
        return rc;
    if (count > 0)
        clapp_graph_apply(&p->graph);
    else   /* a hook that drops this step: nothing applied, nothing kept */
        clapp_optim_zero_grad(&p->graph.optim);
    return 1;
}

int clapp_pipeline_output(clapp_pipeline *p, const char *name, const clapp_block **blk)
{
    int rc = check_running(p, "output"), i;
    if (rc < 0)
        return rc;
    if (!blk)
        return fail(p, CLAPP_E_INVAL, "output: NULL output pointer");
    *blk = NULL;
    if ((i = find_element(p, name)) < 0)
        return i;
    if (!p->stepped)
        return fail(p, CLAPP_E_STATE, "output '%s': no block has been processed (step first; after "
                    "the last step of a manifest nothing is held)", name);
    *blk = i == 0 ? p->last : clapp_graph_output(&p->graph, i);
    return CLAPP_OK;
}

int clapp_pipeline_stream(const clapp_pipeline *p, const char *name, clapp_stream_info *info)
{
    clapp_pipeline *q = (clapp_pipeline *)p;
    int rc = check_running(q, "stream"), i;
    if (rc < 0)
        return rc;
    if (!info)
        return fail(q, CLAPP_E_INVAL, "stream: NULL output pointer");
    if ((i = find_element(q, name)) < 0)
        return i;
    *info = i == 0 ? p->info : p->graph.nodes[i].out_info;
    return CLAPP_OK;
}

int clapp_pipeline_finish(clapp_pipeline *p)
{
    int rc = check_running(p, "finish");
    if (rc < 0)
        return rc;
    return clapp_graph_finish(&p->graph, p->err, sizeof p->err);
}

int clapp_pipeline_set_learning(clapp_pipeline *p, int on)
{
    clapp_graph *g = &p->graph;
    int rc = check_running(p, "set_learning");
    if (rc < 0)
        return rc;
    if (on && !p->learn_capable)
        return fail(p, CLAPP_E_STATE, "set_learning: %s was created without learning "
                    "(clapp_options.learn = 1 allocates gradients and the optimizer)", p->pd.file);
    g->p.learn = on != 0;
    for (int i = 1; i < g->n; i++) {
        clapp_node *nd = &g->nodes[i];
        if (!nd->inst || !nd->desc->set_mode)
            continue;
        rc = nd->desc->set_mode(nd->inst, g->p.learn && nd->learn ? CLAPP_MODE_LEARN : CLAPP_MODE_FROZEN);
        if (rc < 0)
            return fail(p, rc, "%s '%s': set_mode failed (status %d)", nd->pe->type, nd->pe->name, rc);
    }
    return CLAPP_OK;
}

/* ---- checkpoints ------------------------------------------------------------------ */

int clapp_pipeline_save(clapp_pipeline *p, const char *path)
{
    clapp_ckpt_options co = {p && p->learn_capable, 1};
    int rc = check_running(p, "save");
    if (rc < 0)
        return rc;
    if (!path)
        return fail(p, CLAPP_E_INVAL, "save: no path given");
    return clapp_ckpt_save(&p->graph, path, &co, p->err, sizeof p->err);
}

int clapp_pipeline_load(clapp_pipeline *p, const char *path)
{
    clapp_ckpt_options co = {0, 1};
    int rc = check_running(p, "load");
    if (rc < 0)
        return rc;
    if (!path)
        return fail(p, CLAPP_E_INVAL, "load: no path given");
    return clapp_ckpt_load(&p->graph, path, &co, p->err, sizeof p->err);
}

int clapp_pipeline_resume(clapp_pipeline *p, const char *path)
{
    clapp_ckpt_options co = {1, 1};
    char *seed;
    int rc = check_running(p, "resume");
    if (rc < 0)
        return rc;
    if (!path)
        return fail(p, CLAPP_E_INVAL, "resume: no path given");
    if (!p->learn_capable)
        return fail(p, CLAPP_E_STATE, "resume %s: the pipeline was created without learning; "
                    "clapp_pipeline_load reads the weights alone", path);
    if (p->started || p->stepped || p->graph.blocks > 0)
        return fail(p, CLAPP_E_STATE, "resume %s: blocks have been processed already; resume right "
                    "after open", path);
    if (!(seed = clapp_ckpt_read_meta(path, "seed", p->err, sizeof p->err)))
        return CLAPP_E_FORMAT;
    if (strtoull(seed, NULL, 10) != p->opt.seed) {
        rc = fail(p, CLAPP_E_INVAL, "%s was trained with seed %s, the pipeline has seed %llu; resume "
                  "with the same seed", path, seed, (unsigned long long)p->opt.seed);
        free(seed);
        return rc;
    }
    free(seed);
    {
        /* The data position of a sharded run depends on the number of shards. */
        char e2[16];
        char *shards = clapp_ckpt_read_meta(path, "shards", e2, sizeof e2);
        long n = shards ? strtol(shards, NULL, 10) : 1;
        free(shards);
        if (n != p->shards)
            return fail(p, CLAPP_E_INVAL, "%s was trained by %ld process%s, this run has %d; resume with "
                        "as many (mpirun -np %ld)", path, n, n == 1 ? "" : "es", p->shards, n);
    }
    if ((rc = clapp_ckpt_load(&p->graph, path, &co, p->err, sizeof p->err)) < 0)
        return rc;
    clapp_graph_mix_draws(&p->graph);   /* the checkpoint holds shard 0's draws */
    if (p->mode == MODE_MANIFEST) {
        p->skip_blocks = p->graph.blocks;
        return start_source(p);
    }
    return CLAPP_OK;
}

/* ---- measurements ------------------------------------------------------------------ */

int clapp_pipeline_report(clapp_pipeline *p, const char *name, char *buf, size_t cap)
{
    int rc = check_running(p, "report"), i;
    if (rc < 0)
        return rc;
    if (!buf || cap == 0)
        return fail(p, CLAPP_E_INVAL, "report: no buffer");
    buf[0] = 0;
    if ((i = find_element(p, name)) < 0)
        return i;
    if (i == 0)
        return CLAPP_OK;
    rc = clapp_graph_report(&p->graph, i, buf, cap);
    if (rc < 0)
        return fail(p, rc, "%s '%s': report failed (status %d%s)", p->pd.elems[i].type, name, rc,
                    rc == CLAPP_E_NOMEM ? ": the buffer is too small" : "");
    return CLAPP_OK;
}

int clapp_pipeline_loss(const clapp_pipeline *p, const char *name, clapp_loss_info *info)
{
    clapp_pipeline *q = (clapp_pipeline *)p;
    const clapp_node *nd;
    int rc = check_running(q, "loss"), i;
    if (rc < 0)
        return rc;
    if (!info)
        return fail(q, CLAPP_E_INVAL, "loss: NULL output pointer");
    if ((i = find_element(q, name)) < 0)
        return i;
    nd = &p->graph.nodes[i];
    if (nd->kind != CLAPP_KIND_LOSS)
        return fail(q, CLAPP_E_INVAL, "loss: '%s' is a %s, not a loss element", name, nd->pe->type);
    info->last = nd->last.pairs > 0 ? nd->last.loss : NAN;
    info->last_pairs = nd->last.pairs;
    info->count = nd->loss_count;
    info->mean = nd->loss_count > 0 ? nd->loss_sum / (double)nd->loss_count : NAN;
    return CLAPP_OK;
}

int clapp_pipeline_run_info(const clapp_pipeline *p, clapp_run_info *info)
{
    clapp_pipeline *q = (clapp_pipeline *)p;
    int rc = check_running(q, "run_info");
    if (rc < 0)
        return rc;
    if (!info)
        return fail(q, CLAPP_E_INVAL, "run_info: NULL output pointer");
    info->blocks = p->graph.blocks;
    info->steps = p->steps;
    info->files_done = p->src ? clapp_source_done_count(p->src) : 0;
    info->files_failed = p->src ? clapp_source_failed_count(p->src) : 0;
    info->files = p->manifest.n;
    info->aligned_files = 0;
    for (int32_t i = 0; i < p->manifest.n; i++)
        info->aligned_files += p->manifest.entries[i].alignment != NULL;
    info->lr_scale = clapp_optim_lr_scale(&p->graph.optim.p, p->graph.optim.t);
    info->diag_seconds = p->graph.diag_seconds;
    return CLAPP_OK;
}

int clapp_pipeline_element_stats(const clapp_pipeline *p, const char *name, clapp_element_stats *st)
{
    clapp_pipeline *q = (clapp_pipeline *)p;
    const clapp_node *nd;
    int rc = check_running(q, "element_stats"), i;
    if (rc < 0)
        return rc;
    if (!st)
        return fail(q, CLAPP_E_INVAL, "element_stats: NULL output pointer");
    if ((i = find_element(q, name)) < 0)
        return i;
    memset(st, 0, sizeof *st);
    if (i == 0)
        return CLAPP_OK;
    nd = &p->graph.nodes[i];
    st->seconds = nd->seconds;
    st->diag_block = p->graph.diag_block;
    st->has_out = nd->diag.has_out;
    st->dead = nd->diag.out.dead;
    st->pr = nd->diag.out.pr;
    st->has_grad = nd->diag.has_grad;
    st->grad_norm = nd->diag.grad_norm;
    st->update_norm = nd->diag.update_norm;
    st->weight_norm = nd->diag.weight_norm;
    return CLAPP_OK;
}

int clapp_checkpoint_metadata(const char *path, const char *key, char **value, char *err,
                              size_t errlen)
{
    char local[16];
    if (!err || errlen == 0) {
        err = local;
        errlen = sizeof local;
    }
    err[0] = 0;
    if (!path || !key || !value) {
        snprintf(err, errlen, "checkpoint_metadata: path, key and value are needed");
        return CLAPP_E_INVAL;
    }
    *value = clapp_ckpt_read_meta(path, key, err, errlen);
    return *value ? CLAPP_OK : CLAPP_E_NOTFOUND;
}

/* ---- the catalog -------------------------------------------------------------------- */

struct clapp_catalog {
    clapp_pipeline base;   /* options, host and registry; no pipeline */
};

int clapp_catalog_create(clapp_catalog **out, const clapp_options *opt)
{
    clapp_catalog *c;
    int rc;
    if (!out)
        return CLAPP_E_INVAL;
    *out = c = calloc(1, sizeof *c);
    if (!c)
        return CLAPP_E_NOMEM;
    rc = init_host_registry(&c->base, opt);
    return rc;
}

int clapp_catalog_create_file(clapp_catalog **out, const char *path, const clapp_options *opt)
{
    clapp_catalog *c;
    clapp_pipeline *b;
    char *rel = NULL;
    int rc;
    if (!out)
        return CLAPP_E_INVAL;
    *out = c = calloc(1, sizeof *c);
    if (!c)
        return CLAPP_E_NOMEM;
    b = &c->base;
    if ((rc = init_host(b, opt)) < 0)
        return rc;
    if ((rc = clapp_registry_init(&b->reg, &b->host)) < 0)
        return fail(b, rc, "cannot set up the element registry (status %d)", rc);
    b->have_reg = 1;
    if (!path)
        return fail(b, CLAPP_E_INVAL, "no plugin file given");
    /* dlopen searches the library path for a bare name: make it relative */
    if (!(rel = malloc(strlen(path) + 3)))
        return fail(b, CLAPP_E_NOMEM, "out of memory");
    snprintf(rel, strlen(path) + 3, "%s%s", strchr(path, '/') ? "" : "./", path);
    rc = clapp_registry_load_file(&b->reg, rel, b->err, sizeof b->err);
    free(rel);
    return rc;
}

int clapp_catalog_values(clapp_catalog *c, int i, const char *const *settings, int n_settings,
                         const clapp_param_value **values)
{
    clapp_pipeline *b = c ? &c->base : NULL;
    char *text = NULL;
    size_t len = 0;
    FILE *mf;
    int rc;
    if (!c || !c->base.have_reg || !values || n_settings < 0 || (n_settings > 0 && !settings))
        return b ? fail(b, CLAPP_E_INVAL, "catalog_values: bad arguments") : CLAPP_E_INVAL;
    *values = NULL;
    if (i < 0 || i >= b->reg.n)
        return fail(b, CLAPP_E_INVAL, "catalog element %d: there are %d", i, b->reg.n);
    if (b->reg.items[i].desc->kind == CLAPP_KIND_SOURCE)
        return fail(b, CLAPP_E_UNSUPPORTED, "catalog_values: the source's values come with a pipeline");
    clapp_pipedesc_free(&b->pd);
    /* a pipeline of the element alone gives the host's own resolution */
    if (!(mf = open_memstream(&text, &len)))
        return fail(b, CLAPP_E_NOMEM, "out of memory");
    fprintf(mf, "source ! %s", b->reg.items[i].desc->id);
    for (int k = 0; k < n_settings; k++)
        fprintf(mf, " %s", settings[k] ? settings[k] : "");
    if (fclose(mf) != 0 || !text) {
        free(text);
        return fail(b, CLAPP_E_NOMEM, "out of memory");
    }
    rc = clapp_pipedesc_parse(&b->pd, text, "<parameters>", b->err, sizeof b->err);
    free(text);
    if (rc == CLAPP_OK)
        rc = clapp_pipedesc_resolve(&b->pd, &b->reg, b->err, sizeof b->err);
    if (rc < 0)
        return rc;
    if (b->pd.n != 2 || b->pd.elems[1].desc != b->reg.items[i].desc)
        return fail(b, CLAPP_E_INVAL, "catalog_values: the settings must be KEY=VALUE pairs of %s",
                    b->reg.items[i].desc->id);
    *values = b->pd.elems[1].values;
    return CLAPP_OK;
}

int clapp_catalog_count(const clapp_catalog *c, int *n)
{
    if (!c || !n || !c->base.have_reg)
        return CLAPP_E_INVAL;
    *n = c->base.reg.n;
    return CLAPP_OK;
}

int clapp_catalog_element(const clapp_catalog *c, int i, const clapp_plugin_desc **desc,
                          const char **file)
{
    clapp_pipeline *b = c ? (clapp_pipeline *)&c->base : NULL;
    if (!c || !c->base.have_reg)
        return CLAPP_E_INVAL;
    if (i < 0 || i >= b->reg.n)
        return fail(b, CLAPP_E_INVAL, "catalog element %d: there are %d", i, b->reg.n);
    if (desc)
        *desc = b->reg.items[i].desc;
    if (file)
        *file = b->reg.items[i].file;
    return CLAPP_OK;
}

int clapp_catalog_find(clapp_catalog *c, const char *id, int *index)
{
    clapp_pipeline *b = c ? &c->base : NULL;
    size_t used;
    if (!c || !c->base.have_reg || !index)
        return CLAPP_E_INVAL;
    for (int32_t i = 0; id && i < b->reg.n; i++)
        if (!strcmp(b->reg.items[i].desc->id, id)) {
            *index = i;
            return CLAPP_OK;
        }
    used = (size_t)snprintf(b->err, sizeof b->err, "unknown element '%s'; valid elements:", id ? id : "(null)");
    for (int32_t i = 0; i < b->reg.n && used < sizeof b->err; i++)
        used += (size_t)snprintf(b->err + used, sizeof b->err - used, " %s", b->reg.items[i].desc->id);
    return CLAPP_E_NOTFOUND;
}

const char *clapp_catalog_error(const clapp_catalog *c)
{
    return c ? c->base.err : "no catalog (NULL handle)";
}

void clapp_catalog_destroy(clapp_catalog *c)
{
    if (!c)
        return;
    clapp_pipedesc_free(&c->base.pd);
    if (c->base.have_reg)
        clapp_registry_free(&c->base.reg);
    free(c);
}

/* ---- teardown ---------------------------------------------------------------------- */

void clapp_pipeline_destroy(clapp_pipeline *p)
{
    if (!p)
        return;
    if (p->have_graph)
        clapp_graph_destroy(&p->graph);
    clapp_source_destroy(p->src);
    for (int32_t b = 0; p->pl && b < p->pblk.lanes; b++) {
        free(p->pl[b].name);
        free(p->pl[b].buf);
        swr_free(&p->pl[b].swr);
    }
    free(p->pl);
    free(p->grads);
    free(p->pblk.lane);
    clapp_tensor_free(&p->pblk.x);
    clapp_labelset_free(&p->labels);
    clapp_labelset_free(&p->classes);
    clapp_manifest_free(&p->manifest);
    clapp_pipedesc_free(&p->pd);
    if (p->have_reg)
        clapp_registry_free(&p->reg);
    free(p);
}
