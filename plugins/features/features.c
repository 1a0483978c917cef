/* features — a sink that writes the stream reaching it to one .npy file per
 * sequence: DIR/<sequence key><suffix>.npy, float32, shape (T, C) for
 * [B, C, T] streams and (T, C, H, W) for video, rows in time order. The
 * header is written with room for any length and patched when the sequence
 * ends (or at finish, for streams cut short), so files are valid numpy
 * arrays from the first byte once closed.
 *
 * Outputs never look complete when they are not: a file is written as
 * NAME.npy.partial and renamed to NAME.npy when its sequence ends (or at
 * finish: a run stopped early, whose rows are then exactly those
 * processed); a sequence whose file failed mid-way (CLAPP_LANE_SEQ_FAILED)
 * becomes NAME.partial.npy, a valid array of the part decoded, with a
 * warning; a failed write, seek or close removes the file and fails the
 * run with an error naming it.
 *
 * Files stay inside DIR: out= may not have a ".." part, suffix= may not
 * hold a '/', and a sequence key that is absolute or has a ".." part (a
 * host's clapp_pipeline_begin name; manifest keys never do) fails its file
 * with an error naming it. */
#define _GNU_SOURCE
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "clapp/plugin.h"
#include "clapp/plugin_util.h"

#define NPY_HEADER_BYTES 128   /* magic + len + dict, padded: fits any shape we write */

typedef struct features_lane {
    FILE   *f;
    char   *path;      /* the final name, DIR/<key><suffix>.npy */
    char   *tmp;       /* what is being written, path + ".partial" */
    int64_t rows;
} features_lane;

typedef struct features {
    const clapp_host *host;
    char             *name;
    const char       *out_param, *suffix_param;   /* the parameters (valid until destroy) */
    char             *dir;
    char             *suffix;
    clapp_stream_info in;
    int64_t           row;       /* floats per time step */
    float            *scratch;   /* one lane's rows of a block, time-major */
    features_lane    *lanes;
} features;

static const clapp_param_desc features_params[] = {
    {"out", CLAPP_PARAM_STRING, "features", 0, 0, NULL, "output folder (created if missing)"},
    {"suffix", CLAPP_PARAM_STRING, "", 0, 0, NULL, "appended to each file's name before .npy"},
};
#define FEATURES_N_PARAMS ((int32_t)(sizeof features_params / sizeof features_params[0]))

/* 1 if the path has a ".." part. */
static int has_dotdot(const char *path)
{
    for (const char *p = path; *p;) {
        size_t n = strcspn(p, "/");
        if (n == 2 && p[0] == '.' && p[1] == '.')
            return 1;
        p += n;
        p += *p == '/';
    }
    return 0;
}

/* 1 if a name joined to a folder could leave it: absolute, or a ".." part. */
static int escapes(const char *name)
{
    return name[0] == '/' || has_dotdot(name);
}

static int mkdir_parents(char *path)
{
    /* Create every folder of path's directory part. */
    for (char *p = path + 1; *p; p++) {
        if (*p != '/')
            continue;
        *p = 0;
        if (mkdir(path, 0777) != 0 && errno != EEXIST) {
            *p = '/';
            return -1;
        }
        *p = '/';
    }
    return 0;
}

static void npy_header(const features *ft, int64_t rows, char out[NPY_HEADER_BYTES])
{
    char dict[NPY_HEADER_BYTES];
    int n;
    if (ft->in.ndim == 5)
        n = snprintf(dict, sizeof dict, "{'descr': '<f4', 'fortran_order': False, 'shape': (%lld, %lld, %lld, %lld), }",
                     (long long)rows, (long long)ft->in.shape[1], (long long)ft->in.shape[3],
                     (long long)ft->in.shape[4]);
    else
        n = snprintf(dict, sizeof dict, "{'descr': '<f4', 'fortran_order': False, 'shape': (%lld, %lld), }",
                     (long long)rows, (long long)ft->row);
    memset(out, ' ', NPY_HEADER_BYTES);
    memcpy(out, "\x93NUMPY\x01\x00", 8);
    out[8] = (char)((NPY_HEADER_BYTES - 10) & 0xff);
    out[9] = (char)((NPY_HEADER_BYTES - 10) >> 8);
    memcpy(out + 10, dict, (size_t)n);
    out[NPY_HEADER_BYTES - 1] = '\n';
}

/* Patch the header and close; then rename the file to its final name, or
 * to NAME.partial.npy when the sequence failed, or remove it when it could
 * not be written. */
static int lane_close(features *ft, features_lane *l, int failed)
{
    char hdr[NPY_HEADER_BYTES], *dest = NULL;
    int rc = CLAPP_OK;
    if (!l->f)
        return CLAPP_OK;
    npy_header(ft, l->rows, hdr);
    if (fseek(l->f, 0, SEEK_SET) != 0 || fwrite(hdr, 1, sizeof hdr, l->f) != sizeof hdr ||
        fflush(l->f) != 0) {
        clapp_host_log(ft->host, CLAPP_LOG_ERROR, ft->name, "%s: cannot write (%s); removed", l->tmp,
                       strerror(errno));
        rc = CLAPP_E_IO;
    }
    if (fclose(l->f) != 0 && rc == CLAPP_OK) {
        clapp_host_log(ft->host, CLAPP_LOG_ERROR, ft->name, "%s: cannot close (%s); removed", l->tmp,
                       strerror(errno));
        rc = CLAPP_E_IO;
    }
    l->f = NULL;
    if (rc < 0) {
        remove(l->tmp);
    } else if (failed) {
        /* DIR/key.npy -> DIR/key.partial.npy; an older complete file of this key goes. */
        size_t n = strlen(l->path) - 4;
        if (asprintf(&dest, "%.*s.partial.npy", (int)n, l->path) < 0) {
            dest = NULL;
            rc = CLAPP_E_NOMEM;
            remove(l->tmp);
        } else if (rename(l->tmp, dest) != 0) {
            clapp_host_log(ft->host, CLAPP_LOG_ERROR, ft->name, "%s: cannot rename to %s (%s)", l->tmp, dest,
                           strerror(errno));
            rc = CLAPP_E_IO;
        } else {
            remove(l->path);
            clapp_host_log(ft->host, CLAPP_LOG_WARNING, ft->name, "%s: its input failed (see the error "
                           "above); the %lld rows read are in %s", l->path, (long long)l->rows, dest);
        }
    } else if (rename(l->tmp, l->path) != 0) {
        clapp_host_log(ft->host, CLAPP_LOG_ERROR, ft->name, "%s: cannot rename to %s (%s)", l->tmp, l->path,
                       strerror(errno));
        rc = CLAPP_E_IO;
    }
    free(dest);
    free(l->path);
    free(l->tmp);
    l->path = l->tmp = NULL;
    l->rows = 0;
    return rc;
}

/* A write failed: drop the file (its header would not match), say so once. */
static int lane_fail(features *ft, features_lane *l, const char *what)
{
    clapp_host_log(ft->host, CLAPP_LOG_ERROR, ft->name, "%s: %s (%s); removed", l->tmp, what, strerror(errno));
    fclose(l->f);
    l->f = NULL;
    remove(l->tmp);
    free(l->path);
    free(l->tmp);
    l->path = l->tmp = NULL;
    l->rows = 0;
    return CLAPP_E_IO;
}

static int lane_open(features *ft, features_lane *l, const char *key)
{
    char hdr[NPY_HEADER_BYTES];
    if (key && escapes(key)) {
        clapp_host_log(ft->host, CLAPP_LOG_ERROR, ft->name, "sequence name '%s' would write outside %s "
                       "(an absolute path or a '..' part); not written", key, ft->dir);
        return CLAPP_E_INVAL;
    }
    if (asprintf(&l->path, "%s/%s%s.npy", ft->dir, key && *key ? key : "stream", ft->suffix) < 0) {
        l->path = NULL;
        return CLAPP_E_NOMEM;
    }
    if (asprintf(&l->tmp, "%s.partial", l->path) < 0) {
        l->tmp = NULL;
        free(l->path);
        l->path = NULL;
        return CLAPP_E_NOMEM;
    }
    if (mkdir_parents(l->tmp) < 0 || !(l->f = fopen(l->tmp, "wb"))) {
        clapp_host_log(ft->host, CLAPP_LOG_ERROR, ft->name, "%s: cannot create (%s)", l->tmp,
                       strerror(errno));
        free(l->path);
        free(l->tmp);
        l->path = l->tmp = NULL;
        return CLAPP_E_IO;
    }
    l->rows = 0;
    npy_header(ft, 0, hdr);
    if (fwrite(hdr, 1, sizeof hdr, l->f) != sizeof hdr)
        return lane_fail(ft, l, "cannot write");
    return CLAPP_OK;
}

static void features_destroy(void *self)
{
    features *ft = self;
    if (!ft)
        return;
    for (int64_t b = 0; ft->lanes && b < ft->in.shape[0]; b++)
        lane_close(ft, &ft->lanes[b], 0);
    free(ft->lanes);
    free(ft->scratch);
    free(ft->name);
    free(ft->dir);
    free(ft->suffix);
    free(ft);
}

static const clapp_param_field features_fields[] = {
    CLAPP_FIELD_AS(features, out_param, "out"),
    CLAPP_FIELD_AS(features, suffix_param, "suffix"),
};

static int features_create(const clapp_create_info *info, void **self)
{
    features *ft = calloc(1, sizeof *ft);
    *self = ft;
    if (!ft)
        return CLAPP_E_NOMEM;
    ft->host = info->host;
    if (clapp_params_bind(info, features_params, FEATURES_N_PARAMS, features_fields,
                          (int32_t)(sizeof features_fields / sizeof features_fields[0]), ft) != CLAPP_OK)
        return CLAPP_E_INVAL;
    ft->name = strdup(info->instance_name ? info->instance_name : "features");
    ft->dir = strdup(ft->out_param && *ft->out_param ? ft->out_param : "features");
    ft->suffix = strdup(ft->suffix_param ? ft->suffix_param : "");
    if (!ft->name || !ft->dir || !ft->suffix)
        return CLAPP_E_NOMEM;
    /* Outputs stay inside the folder given: an absolute out= is fine, a
     * ".." part (which a shared pipeline file could aim anywhere) is not. */
    if (has_dotdot(ft->dir)) {
        clapp_host_log(ft->host, CLAPP_LOG_ERROR, ft->name, "out=%s: a '..' part is not allowed in the "
                       "output folder; give it without '..' (an absolute path is fine)", ft->dir);
        return CLAPP_E_INVAL;
    }
    if (strchr(ft->suffix, '/')) {
        clapp_host_log(ft->host, CLAPP_LOG_ERROR, ft->name, "suffix=%s: a suffix is part of a file name "
                       "and may not hold '/' (files stay inside out=%s)", ft->suffix, ft->dir);
        return CLAPP_E_INVAL;
    }
    return CLAPP_OK;
}

static int features_configure(void *self, const clapp_stream_info *in, clapp_stream_info *out)
{
    features *ft = self;
    char *probe = NULL;
    (void)out;
    if (in->ndim != 3 && in->ndim != 5) {
        clapp_host_log(ft->host, CLAPP_LOG_ERROR, ft->name, "takes [B,C,T] or [B,C,T,H,W], got %d dims",
                       in->ndim);
        return CLAPP_E_SHAPE;
    }
    for (int64_t b = 0; ft->lanes && b < ft->in.shape[0]; b++)
        lane_close(ft, &ft->lanes[b], 0);
    free(ft->lanes);
    free(ft->scratch);
    ft->in = *in;
    ft->row = in->shape[1] * (in->ndim == 5 ? in->shape[3] * in->shape[4] : 1);
    ft->lanes = calloc((size_t)in->shape[0], sizeof *ft->lanes);
    ft->scratch = malloc((size_t)(ft->row * in->shape[2]) * sizeof(float) + 1);
    if (!ft->lanes || !ft->scratch)
        return CLAPP_E_NOMEM;
    /* Fail now, not after hours of work, if the folder cannot be made. */
    if (asprintf(&probe, "%s/.", ft->dir) < 0)
        return CLAPP_E_NOMEM;
    if (mkdir_parents(probe) < 0) {
        clapp_host_log(ft->host, CLAPP_LOG_ERROR, ft->name, "%s: cannot create the folder (%s)",
                       ft->dir, strerror(errno));
        free(probe);
        return CLAPP_E_IO;
    }
    free(probe);
    return CLAPP_OK;
}

static int features_forward(void *self, const clapp_block *in, clapp_block *out)
{
    features *ft = self;
    const int64_t C = in->x.shape[1], T = in->x.shape[2];
    const int64_t hw = ft->row / C;
    (void)out;
    for (int32_t b = 0; b < in->lanes; b++) {
        const clapp_lane *ln = &in->lane[b];
        features_lane *l = &ft->lanes[b];
        const float *src = in->x.data + (int64_t)b * C * T * hw;
        int rc;
        if (ln->seq_id < 0)
            continue;
        if ((ln->flags & CLAPP_LANE_SEQ_START) || !l->f) {
            if (l->f && (rc = lane_close(ft, l, 0)) < 0)
                return rc;
            if ((rc = lane_open(ft, l, ln->seq_name)) < 0)
                return rc;
        }
        /* [C, T, hw] -> rows of [C, hw] per time step. */
        for (int32_t t = 0; t < ln->len; t++)
            for (int64_t c = 0; c < C; c++)
                memcpy(ft->scratch + (int64_t)t * ft->row + c * hw, src + (c * T + t) * hw,
                       (size_t)hw * sizeof(float));
        if (ln->len > 0 &&
            fwrite(ft->scratch, sizeof(float), (size_t)(ln->len * ft->row), l->f) !=
                (size_t)(ln->len * ft->row))
            return lane_fail(ft, l, "write failed");
        l->rows += ln->len;
        if ((ln->flags & CLAPP_LANE_SEQ_END) &&
            (rc = lane_close(ft, l, (ln->flags & CLAPP_LANE_SEQ_FAILED) != 0)) < 0)
            return rc;
    }
    return CLAPP_OK;
}

static int features_finish(void *self)
{
    features *ft = self;
    int status = CLAPP_OK;
    for (int64_t b = 0; b < ft->in.shape[0]; b++) {
        int rc = lane_close(ft, &ft->lanes[b], 0);
        if (rc < 0)
            status = rc;
    }
    return status;
}

static int features_reset(void *self, int32_t lane)
{
    (void)self;
    (void)lane;
    return CLAPP_OK;
}

static const clapp_plugin_desc features_desc = {
    .struct_size = sizeof(clapp_plugin_desc),
    .id = "features",
    .version = "1.0.0",
    .kind = CLAPP_KIND_SINK,
    .help = "write the stream to one .npy file per sequence (float32, time-major rows)",
    .params = features_params,
    .n_params = FEATURES_N_PARAMS,
    .create = features_create,
    .destroy = features_destroy,
    .configure = features_configure,
    .forward = features_forward,
    .reset = features_reset,
    .finish = features_finish,
};

CLAPP_PLUGIN_ENTRY(&features_desc);
