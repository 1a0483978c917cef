/* make_action_corpus — a small action-recognition corpus of synthetic camera
 * and object motions, in the UCF-101 layout (the paper's UCF-101 cannot be
 * downloaded here; docs/DESIGN.md §9).
 *
 *   make_action_corpus --out DIR [--clips-per-class N] [--test-clips-per-class N]
 *                      [--seed S] [--size PX] [--fps N] [--seconds S]
 *                      [--codec h264|mpeg4] [--images DIR] [--sprites IDXFILE] [-q]
 *
 * Ten classes. Pan, rotate and zoom are named by what the CAMERA does, as a
 * cameraman would; the picture content moves the other way:
 *   PanLeft / PanRight / PanUp / PanDown   a crop window sliding over a larger
 *                                         texture; PanRight: content moves left
 *   RotateCW / RotateCCW                  the camera rolls clockwise (content
 *                                         turns counter-clockwise on screen) / the reverse
 *   ZoomIn / ZoomOut                      content grows / shrinks (exponentially)
 *   ObjectCircle                          a textured disc (or sprite) on a circle, still camera
 *   ObjectBounce                          the same object moving straight, bouncing off the edges
 * Each clip draws its speed, start position, phase, direction (circling) and
 * textures at random.
 *
 * Textures: procedural by default (sums of oriented gratings, Gaussian blobs
 * on a hashed lattice and value noise, defined on the whole plane so pans
 * never run out), or the images of --images DIR (anything FFmpeg decodes;
 * mirrored at the borders), and for moving objects optionally the sprites of
 * an IDX image file (--sprites, e.g. Fashion-MNIST's train-images-idx3-ubyte,
 * gzipped or not). Windows that are too dark or flat (std-dev < 0.05 or mean
 * outside [0.1, 0.9] on a 0..1 scale) are redrawn.
 *
 * Held out: test clips never see a training texture. Procedural textures are
 * seeded from (seed, split, class, clip, attempt), so the two splits draw from
 * separate seed streams; with --images every 5th image (sorted by name) and
 * with --sprites every 6th sprite is reserved for the test split.
 *
 * Frames are rendered gray in C and encoded with libavcodec (H.264 via libx264
 * into .mp4, or MPEG-4 part 2 into .avi), single-threaded and bit-exact, so
 * the same seed gives the same files.
 *
 * Layout of DIR:
 *   CLASS/v_CLASS_train_NNNN.mp4, CLASS/v_CLASS_test_NNNN.mp4
 *   train.tsv, test.tsv        manifests: PATH<TAB>CLASS (paths relative to DIR)
 *   classInd.txt               "1 PanLeft" ... (UCF-101 style, 1-based)
 *   trainlist01.txt            "PanLeft/v_PanLeft_train_0000.mp4 1"
 *   testlist01.txt             "PanLeft/v_PanLeft_test_0000.mp4"
 *   README.txt                 what the classes are and how it was made
 */
#include <dirent.h>
#include <errno.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <unistd.h>

#include <libavcodec/avcodec.h>
#include <libavformat/avformat.h>
#include <libavutil/imgutils.h>
#include <libavutil/opt.h>
#include <libswscale/swscale.h>

#include "clapp/plugin_util.h"

#define AC_PI 3.14159265358979323846
#define AC_MAX_TRIES 100
#define AC_MAX_IMAGE_SIDE 1024
#define AC_N_GRATINGS 4

typedef enum { AC_PAN, AC_ROTATE, AC_ZOOM, AC_CIRCLE, AC_BOUNCE } ac_motion;
typedef enum { AC_H264 = 0, AC_MPEG4 = 1 } ac_codec;

typedef struct ac_class {
    const char *name;
    ac_motion   motion;
    int         dx, dy;   /* pan: camera direction; rotate/zoom: sign in dx */
    const char *what;     /* for README.txt */
} ac_class;

static const ac_class AC_CLASSES[] = {
    {"PanLeft", AC_PAN, -1, 0, "camera pans left: content moves right"},
    {"PanRight", AC_PAN, 1, 0, "camera pans right: content moves left"},
    {"PanUp", AC_PAN, 0, -1, "camera pans up: content moves down"},
    {"PanDown", AC_PAN, 0, 1, "camera pans down: content moves up"},
    {"RotateCW", AC_ROTATE, 1, 0, "camera rolls clockwise: content turns counter-clockwise"},
    {"RotateCCW", AC_ROTATE, -1, 0, "camera rolls counter-clockwise: content turns clockwise"},
    {"ZoomIn", AC_ZOOM, 1, 0, "zoom in: content grows from the centre"},
    {"ZoomOut", AC_ZOOM, -1, 0, "zoom out: content shrinks towards the centre"},
    {"ObjectCircle", AC_CIRCLE, 0, 0, "still camera, an object moves on a circle (either way)"},
    {"ObjectBounce", AC_BOUNCE, 0, 0, "still camera, an object moves straight and bounces off the edges"},
};
#define AC_N_CLASSES ((int)(sizeof AC_CLASSES / sizeof AC_CLASSES[0]))

typedef struct ac_options {
    const char *out;
    int         train_clips, test_clips;
    uint64_t    seed;
    int         size, fps;
    double      seconds;
    ac_codec    codec;
    const char *images;
    const char *sprites;
    int         quiet;
} ac_options;

/* ------------------------------------------------------------------------ */
/* Random numbers: splitmix64, one stream per clip                           */

static double ac_unif(uint64_t *st, double lo, double hi)
{
    return lo + (hi - lo) * clapp_uniform53(st);
}

/* ------------------------------------------------------------------------ */
/* Textures                                                                  */

typedef struct ac_image {
    int    w, h;
    float *px;     /* gray, 0..1 */
    char  *name;
} ac_image;

typedef struct ac_images {
    ac_image *v;
    int       n;
} ac_images;

typedef struct ac_sprites {
    uint8_t *px;     /* n * rows * cols */
    int      n, rows, cols;
} ac_sprites;

/* A texture is a function on the plane, in frame pixels at scale 1. */
typedef struct ac_texture {
    const ac_image *img;                      /* NULL: procedural */
    double          img_scale;                /* image pixels per frame pixel */
    double          gk[AC_N_GRATINGS][2], gph[AC_N_GRATINGS], gamp[AC_N_GRATINGS];
    double          blob_cell, blob_w;
    double          noise_cell, noise_w;
    uint64_t        hash;
    double          mean, gain;               /* normalisation of the raw sum */
} ac_texture;

static double ac_hash01(uint64_t seed, int64_t i, int64_t j, uint64_t k)
{
    uint64_t h = clapp_mix64(seed ^ clapp_mix64((uint64_t)i * 0x9e3779b97f4a7c15ull + (uint64_t)j * 0xc2b2ae3d27d4eb4full + k));
    return (double)(h >> 11) * (1.0 / 9007199254740992.0);
}

static double ac_value_noise(const ac_texture *t, double x, double y, double cell, uint64_t k)
{
    double fx = x / cell, fy = y / cell;
    double ix = floor(fx), iy = floor(fy), u = fx - ix, v = fy - iy;
    int64_t i = (int64_t)ix, j = (int64_t)iy;
    double a = ac_hash01(t->hash, i, j, k), b = ac_hash01(t->hash, i + 1, j, k);
    double c = ac_hash01(t->hash, i, j + 1, k), d = ac_hash01(t->hash, i + 1, j + 1, k);
    u = u * u * (3 - 2 * u);  /* smoothstep: no creases at cell borders */
    v = v * v * (3 - 2 * v);
    return 2.0 * ((a * (1 - u) + b * u) * (1 - v) + (c * (1 - u) + d * u) * v) - 1.0;
}

static double ac_proc_raw(const ac_texture *t, double x, double y)
{
    double s = 0.0, blobs = 0.0;
    int64_t ci = (int64_t)floor(x / t->blob_cell), cj = (int64_t)floor(y / t->blob_cell);
    for (int g = 0; g < AC_N_GRATINGS; g++)
        s += t->gamp[g] * sin(t->gk[g][0] * x + t->gk[g][1] * y + t->gph[g]);
    /* One blob per lattice cell at a hashed place, size and sign. */
    for (int64_t j = cj - 1; j <= cj + 1; j++)
        for (int64_t i = ci - 1; i <= ci + 1; i++) {
            double bx = ((double)i + ac_hash01(t->hash, i, j, 1)) * t->blob_cell;
            double by = ((double)j + ac_hash01(t->hash, i, j, 2)) * t->blob_cell;
            double r = t->blob_cell * (0.2 + 0.3 * ac_hash01(t->hash, i, j, 3));
            double a = 2.0 * ac_hash01(t->hash, i, j, 4) - 1.0;
            double d2 = (x - bx) * (x - bx) + (y - by) * (y - by);
            blobs += a * exp(-d2 / (2 * r * r));
        }
    s += t->blob_w * blobs;
    s += t->noise_w * (ac_value_noise(t, x, y, t->noise_cell, 5) +
                       0.5 * ac_value_noise(t, x, y, t->noise_cell * 0.5, 6));
    return s;
}

static double ac_image_at(const ac_image *im, double x, double y)
{
    /* Mirror-repeat: pans and rotations may leave the picture. */
    double px[2] = {x, y};
    int lim[2] = {im->w, im->h}, i0[2], i1[2];
    double f[2];
    for (int a = 0; a < 2; a++) {
        double p = px[a] - 0.5, period = 2.0 * lim[a];
        p = fmod(p, period);
        if (p < 0)
            p += period;
        if (p > lim[a] - 1)
            p = p < lim[a] ? lim[a] - 1 : period - 1 - p;
        if (p < 0)
            p = 0;
        i0[a] = (int)floor(p);
        f[a] = p - i0[a];
        i1[a] = i0[a] + 1 < lim[a] ? i0[a] + 1 : i0[a];
    }
    const float *r0 = im->px + (size_t)i0[1] * im->w, *r1 = im->px + (size_t)i1[1] * im->w;
    return (r0[i0[0]] * (1 - f[0]) + r0[i1[0]] * f[0]) * (1 - f[1]) +
           (r1[i0[0]] * (1 - f[0]) + r1[i1[0]] * f[0]) * f[1];
}

static double ac_tex_at(const ac_texture *t, double x, double y)
{
    if (t->img)
        return ac_image_at(t->img, x * t->img_scale, y * t->img_scale);
    return 0.5 + 0.45 * tanh(t->gain * (ac_proc_raw(t, x, y) - t->mean));
}

/* A procedural texture for frames of `size` pixels. Features are at least
 * 4 pixels across, so zooming in (never out below 1x) and rotating do not alias. */
static void ac_texture_procedural(ac_texture *t, uint64_t *st, int size)
{
    double wg = ac_unif(st, 0.1, 1.0), wb = ac_unif(st, 0.1, 1.0), wn = ac_unif(st, 0.1, 1.0);
    double m = 0.0, m2 = 0.0;
    const int n = 512;
    memset(t, 0, sizeof *t);
    t->hash = clapp_splitmix64(st);
    for (int g = 0; g < AC_N_GRATINGS; g++) {
        double lambda = fmax(4.0, ac_unif(st, size / 10.0, size / 3.0));
        double th = ac_unif(st, 0, AC_PI);
        t->gk[g][0] = 2 * AC_PI / lambda * cos(th);
        t->gk[g][1] = 2 * AC_PI / lambda * sin(th);
        t->gph[g] = ac_unif(st, 0, 2 * AC_PI);
        t->gamp[g] = 0.5 * wg * ac_unif(st, 0.3, 1.0); /* four of them: keep blobs and noise visible */
    }
    t->blob_cell = fmax(6.0, ac_unif(st, size / 5.0, size / 2.5));
    t->blob_w = 2.0 * wb;
    t->noise_cell = fmax(8.0, ac_unif(st, size / 6.0, size / 3.0));
    t->noise_w = wn;
    /* Normalise: centre on the mean and map about +-1.5 std through tanh. */
    for (int i = 0; i < n; i++) {
        double v = ac_proc_raw(t, ac_unif(st, -8.0 * size, 8.0 * size), ac_unif(st, -8.0 * size, 8.0 * size));
        m += v / n;
        m2 += v * v / n;
    }
    t->mean = m;
    t->gain = 0.8 / sqrt(fmax(m2 - m * m, 1e-12));
}

static void ac_texture_image(ac_texture *t, const ac_image *im, int size)
{
    memset(t, 0, sizeof *t);
    t->img = im;
    /* The short side of the picture spans 2.5 frame widths (already resampled
     * so at load unless the 1024-pixel cap applied). */
    t->img_scale = (im->w < im->h ? im->w : im->h) / (2.5 * size);
}

/* ------------------------------------------------------------------------ */
/* Loading images and sprites                                                */

static int ac_image_load(const char *path, ac_image *img, int frame_size)
{
    AVFormatContext *fc = NULL;
    AVCodecContext *dc = NULL;
    const AVCodec *dec = NULL;
    AVFrame *fr = av_frame_alloc();
    AVPacket *pkt = av_packet_alloc();
    struct SwsContext *sws = NULL;
    uint8_t *gray = NULL;
    int si, rc, got = 0, w, h;
    memset(img, 0, sizeof *img);
    if (!fr || !pkt) {
        rc = AVERROR(ENOMEM);
        goto fail;
    }
    if ((rc = avformat_open_input(&fc, path, NULL, NULL)) < 0 || (rc = avformat_find_stream_info(fc, NULL)) < 0)
        goto fail;
    if ((si = rc = av_find_best_stream(fc, AVMEDIA_TYPE_VIDEO, -1, -1, &dec, 0)) < 0)
        goto fail;
    if (!(dc = avcodec_alloc_context3(dec))) {
        rc = AVERROR(ENOMEM);
        goto fail;
    }
    if ((rc = avcodec_parameters_to_context(dc, fc->streams[si]->codecpar)) < 0 ||
        (rc = avcodec_open2(dc, dec, NULL)) < 0)
        goto fail;
    while (!got) {
        rc = av_read_frame(fc, pkt);
        if (rc < 0) {
            avcodec_send_packet(dc, NULL); /* drain what the decoder holds */
        } else if (pkt->stream_index != si) {
            av_packet_unref(pkt);
            continue;
        } else {
            avcodec_send_packet(dc, pkt);
            av_packet_unref(pkt);
        }
        int r = avcodec_receive_frame(dc, fr);
        if (r == 0)
            got = 1;
        else if (rc < 0) {
            rc = r == AVERROR(EAGAIN) ? AVERROR_INVALIDDATA : r;
            goto fail;
        }
    }
    /* Resample once (area filter) so the short side spans 2.5 frame widths:
     * sampling a larger picture pixel by pixel later would alias. */
    {
        double s = 2.5 * frame_size / (fr->width < fr->height ? fr->width : fr->height);
        if (s * (fr->width > fr->height ? fr->width : fr->height) > AC_MAX_IMAGE_SIDE)
            s = (double)AC_MAX_IMAGE_SIDE / (fr->width > fr->height ? fr->width : fr->height);
        w = (int)fmax(2.0, lround(fr->width * s));
        h = (int)fmax(2.0, lround(fr->height * s));
    }
    sws = sws_getContext(fr->width, fr->height, (enum AVPixelFormat)fr->format, w, h, AV_PIX_FMT_GRAY8,
                         SWS_AREA, NULL, NULL, NULL);
    gray = malloc((size_t)w * h);
    img->px = malloc((size_t)w * h * sizeof(float));
    if (!sws || !gray || !img->px) {
        rc = AVERROR(ENOMEM);
        goto fail;
    }
    {
        uint8_t *dst[4] = {gray, NULL, NULL, NULL};
        int ls[4] = {w, 0, 0, 0};
        sws_scale(sws, (const uint8_t *const *)fr->data, fr->linesize, 0, fr->height, dst, ls);
    }
    for (size_t i = 0; i < (size_t)w * h; i++)
        img->px[i] = gray[i] / 255.0f;
    img->w = w;
    img->h = h;
    rc = 0;
fail:
    if (rc < 0) {
        free(img->px);
        img->px = NULL;
    }
    free(gray);
    sws_freeContext(sws);
    avcodec_free_context(&dc);
    avformat_close_input(&fc);
    av_frame_free(&fr);
    av_packet_free(&pkt);
    return rc;
}

static int ac_cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static void ac_images_free(ac_images *set)
{
    for (int i = 0; i < set->n; i++) {
        free(set->v[i].px);
        free(set->v[i].name);
    }
    free(set->v);
    set->v = NULL;
    set->n = 0;
}

/* Every regular file of dir that FFmpeg decodes, sorted by name. */
static int ac_images_load(const char *dir, ac_images *set, int frame_size, int quiet)
{
    DIR *d = opendir(dir);
    struct dirent *e;
    char **names = NULL;
    int n = 0, cap = 0, status = 0;
    memset(set, 0, sizeof *set);
    if (!d) {
        fprintf(stderr, "make_action_corpus: %s: cannot open the image folder (%s)\n", dir, strerror(errno));
        return -1;
    }
    while ((e = readdir(d))) {
        if (e->d_name[0] == '.')
            continue;
        if (n == cap) {
            char **nn = realloc(names, (size_t)(cap = cap ? 2 * cap : 64) * sizeof *names);
            if (!nn) {
                status = -1;
                break;
            }
            names = nn;
        }
        if (!(names[n] = malloc(strlen(dir) + strlen(e->d_name) + 2))) {
            status = -1;
            break;
        }
        sprintf(names[n++], "%s/%s", dir, e->d_name);
    }
    closedir(d);
    if (n)
        qsort(names, (size_t)n, sizeof *names, ac_cmp_str);
    set->v = calloc((size_t)(n ? n : 1), sizeof *set->v);
    if (!set->v)
        status = -1;
    for (int i = 0; status == 0 && i < n; i++) {
        struct stat sb;
        ac_image im;
        if (stat(names[i], &sb) != 0 || !S_ISREG(sb.st_mode))
            continue;
        if (ac_image_load(names[i], &im, frame_size) < 0) {
            if (!quiet)
                fprintf(stderr, "make_action_corpus: %s: not an image FFmpeg decodes, skipped\n", names[i]);
            continue;
        }
        im.name = names[i];
        names[i] = NULL;
        set->v[set->n++] = im;
    }
    for (int i = 0; i < n; i++)
        free(names[i]);
    free(names);
    if (status == 0 && set->n < 2) {
        fprintf(stderr, "make_action_corpus: %s: needs at least 2 decodable images (found %d): "
                        "train and test use different ones\n", dir, set->n);
        status = -1;
    }
    if (status < 0)
        ac_images_free(set);
    return status;
}

static uint32_t ac_be32(const uint8_t *b)
{
    return (uint32_t)b[0] << 24 | (uint32_t)b[1] << 16 | (uint32_t)b[2] << 8 | b[3];
}

/* An IDX file of unsigned-byte images (magic 0x00000803), plain or gzipped. */
static int ac_sprites_load(const char *path, ac_sprites *sp)
{
    FILE *f = NULL;
    uint8_t hdr[16];
    int piped = 0, status = -1;
    size_t len = strlen(path), need;
    memset(sp, 0, sizeof *sp);
    if (access(path, R_OK) != 0) {
        fprintf(stderr, "make_action_corpus: %s: cannot read the sprite file (%s)\n", path, strerror(errno));
        return -1;
    }
    if (len > 3 && strcmp(path + len - 3, ".gz") == 0) {
        /* zlib is not linked here; gzip is on every Debian system. */
        char *cmd = malloc(4 * len + 32), *q;
        if (!cmd)
            return -1;
        q = cmd + sprintf(cmd, "gzip -dc -- '");
        for (const char *p = path; *p; p++)
            q += *p == '\'' ? sprintf(q, "'\\''") : sprintf(q, "%c", *p);
        strcpy(q, "'");
        f = popen(cmd, "r");
        free(cmd);
        piped = 1;
    } else {
        f = fopen(path, "rb");
    }
    if (!f || fread(hdr, 1, 16, f) != 16 || ac_be32(hdr) != 0x803) {
        fprintf(stderr, "make_action_corpus: %s: not an IDX file of 8-bit images (magic 0x00000803)\n", path);
        goto done;
    }
    sp->n = (int)ac_be32(hdr + 4);
    sp->rows = (int)ac_be32(hdr + 8);
    sp->cols = (int)ac_be32(hdr + 12);
    if (sp->n < 2 || sp->rows < 4 || sp->cols < 4 || sp->rows > 4096 || sp->cols > 4096 || sp->n > 10000000) {
        fprintf(stderr, "make_action_corpus: %s: implausible IDX header (%d images of %dx%d)\n", path, sp->n,
                sp->rows, sp->cols);
        goto done;
    }
    need = (size_t)sp->n * sp->rows * sp->cols;
    if (!(sp->px = malloc(need)) || fread(sp->px, 1, need, f) != need) {
        fprintf(stderr, "make_action_corpus: %s: truncated (expected %d images of %dx%d)\n", path, sp->n,
                sp->rows, sp->cols);
        goto done;
    }
    status = 0;
done:
    if (f && (piped ? pclose(f) : fclose(f)) != 0 && status == 0 && piped) {
        fprintf(stderr, "make_action_corpus: %s: gzip failed\n", path);
        status = -1;
    }
    if (status < 0) {
        free(sp->px);
        memset(sp, 0, sizeof *sp);
    }
    return status;
}

/* ------------------------------------------------------------------------ */
/* Clips                                                                     */

typedef struct ac_clip {
    const ac_class *cls;
    ac_texture      bg, obj;
    const uint8_t  *sprite;            /* NULL: the object is a textured disc */
    int             sprite_rows, sprite_cols;
    double          x0, y0;            /* camera / texture origin */
    double          speed;             /* pan px/s, rotation rad/s, zoom log-scale/s, object px/s */
    double          phase;
    double          radius;            /* object: disc radius; circle: path radius */
    double          path_r, cx, cy, dir;
    double          vx, vy;
    double          obj_offset;        /* brightness shift of the object */
} ac_clip;

typedef struct ac_world {
    const ac_options *o;
    ac_images         images;
    ac_sprites        sprites;
    int               frames;
} ac_world;

/* Pick an image or sprite of the split: test takes every k-th, train the rest. */
static int ac_pick_split(uint64_t *st, int n, int k, int test)
{
    int n_test = n / k > 0 ? n / k : 1, n_train = n - n_test, r;
    if (test) {
        r = (int)(clapp_splitmix64(st) % (uint64_t)n_test);
        return n / k > 0 ? r * k + (k - 1) : n - 1;
    }
    r = (int)(clapp_splitmix64(st) % (uint64_t)n_train);
    if (n / k == 0)
        return r; /* the last one is the test image */
    return r + r / (k - 1);  /* skip every k-th */
}

static void ac_pick_texture(const ac_world *w, ac_texture *t, uint64_t *st, int test)
{
    if (w->images.n)
        ac_texture_image(t, &w->images.v[ac_pick_split(st, w->images.n, 5, test)], w->o->size);
    else
        ac_texture_procedural(t, st, w->o->size);
}

static void ac_clip_draw(const ac_world *w, ac_clip *c, const ac_class *cls, uint64_t *st, int test)
{
    const double S = w->o->size;
    memset(c, 0, sizeof *c);
    c->cls = cls;
    ac_pick_texture(w, &c->bg, st, test);
    c->x0 = ac_unif(st, -4 * S, 4 * S);
    c->y0 = ac_unif(st, -4 * S, 4 * S);
    if (c->bg.img) { /* keep the window inside the picture at the start */
        c->x0 = ac_unif(st, 0, fmax(0.0, c->bg.img->w / c->bg.img_scale - S));
        c->y0 = ac_unif(st, 0, fmax(0.0, c->bg.img->h / c->bg.img_scale - S));
    }
    c->phase = ac_unif(st, 0, 2 * AC_PI);
    switch (cls->motion) {
    case AC_PAN:
        c->speed = ac_unif(st, 0.25, 0.6) * S;           /* frame widths per second */
        break;
    case AC_ROTATE:
        c->speed = ac_unif(st, 0.06, 0.15) * 2 * AC_PI;  /* 22..54 degrees per second */
        break;
    case AC_ZOOM:
        c->speed = ac_unif(st, 0.08, 0.16);              /* log magnification per second */
        break;
    case AC_CIRCLE:
    case AC_BOUNCE:
        c->radius = ac_unif(st, 0.12, 0.18) * S;
        c->obj_offset = ac_unif(st, -0.15, 0.15);
        if (w->sprites.n) {
            int k = ac_pick_split(st, w->sprites.n, 6, test);
            c->sprite_rows = w->sprites.rows;
            c->sprite_cols = w->sprites.cols;
            c->sprite = w->sprites.px + (size_t)k * w->sprites.rows * w->sprites.cols;
            c->radius *= 1.4; /* sprites do not fill their square */
        } else {
            ac_pick_texture(w, &c->obj, st, test);
        }
        if (cls->motion == AC_CIRCLE) {
            c->path_r = ac_unif(st, 0.18, 0.28) * S;
            c->cx = S / 2 + ac_unif(st, -0.05, 0.05) * S;
            c->cy = S / 2 + ac_unif(st, -0.05, 0.05) * S;
            c->speed = ac_unif(st, 0.25, 0.5) * 2 * AC_PI; /* revolutions per second */
            c->dir = clapp_splitmix64(st) & 1 ? 1.0 : -1.0;
        } else {
            double a = ac_unif(st, 0, 2 * AC_PI), v = ac_unif(st, 0.4, 0.8) * S;
            c->vx = v * cos(a);
            c->vy = v * sin(a);
            c->cx = ac_unif(st, c->radius, S - c->radius);
            c->cy = ac_unif(st, c->radius, S - c->radius);
        }
        break;
    }
}

/* Position folded into [lo, hi]: straight motion reflected at the walls. */
static double ac_fold(double p, double lo, double hi)
{
    double span = hi - lo, q;
    if (span <= 0)
        return lo;
    q = fmod(p - lo, 2 * span);
    if (q < 0)
        q += 2 * span;
    return lo + (q <= span ? q : 2 * span - q);
}

static double ac_clamp01(double v)
{
    return v < 0 ? 0 : v > 1 ? 1 : v;
}

static void ac_render(const ac_world *w, const ac_clip *c, int frame, float *out)
{
    const int S = w->o->size;
    const double tau = frame / (double)w->o->fps, half = S / 2.0;
    switch (c->cls->motion) {
    case AC_PAN: {
        /* The window's corner moves with the camera. */
        double ox = c->x0 + c->cls->dx * c->speed * tau, oy = c->y0 + c->cls->dy * c->speed * tau;
        for (int y = 0; y < S; y++)
            for (int x = 0; x < S; x++)
                out[y * S + x] = (float)ac_tex_at(&c->bg, ox + x + 0.5, oy + y + 0.5);
        return;
    }
    case AC_ROTATE: {
        /* Screen y points down, so a positive angle turns the sampling grid
         * (the camera) clockwise and the content counter-clockwise. */
        double th = c->phase + c->cls->dx * c->speed * tau, cs = cos(th), sn = sin(th);
        double cx = c->x0 + half, cy = c->y0 + half;
        for (int y = 0; y < S; y++)
            for (int x = 0; x < S; x++) {
                double u = x + 0.5 - half, v = y + 0.5 - half;
                out[y * S + x] = (float)ac_tex_at(&c->bg, cx + cs * u - sn * v, cy + sn * u + cs * v);
            }
        return;
    }
    case AC_ZOOM: {
        double dur = (w->frames - 1) / (double)w->o->fps;
        double mag = exp(c->speed * (c->cls->dx > 0 ? tau : dur - tau));
        double cx = c->x0 + half, cy = c->y0 + half;
        for (int y = 0; y < S; y++)
            for (int x = 0; x < S; x++)
                out[y * S + x] = (float)ac_tex_at(&c->bg, cx + (x + 0.5 - half) / mag, cy + (y + 0.5 - half) / mag);
        return;
    }
    case AC_CIRCLE:
    case AC_BOUNCE: {
        double px, py, r = c->radius;
        if (c->cls->motion == AC_CIRCLE) {
            double a = c->phase + c->dir * c->speed * tau;
            px = c->cx + c->path_r * cos(a);
            py = c->cy + c->path_r * sin(a);
        } else {
            px = ac_fold(c->cx + c->vx * tau, r, S - r);
            py = ac_fold(c->cy + c->vy * tau, r, S - r);
        }
        for (int y = 0; y < S; y++)
            for (int x = 0; x < S; x++) {
                double bg = 0.5 + 0.5 * (ac_tex_at(&c->bg, c->x0 + x + 0.5, c->y0 + y + 0.5) - 0.5);
                double u = x + 0.5 - px, v = y + 0.5 - py, alpha, val;
                if (c->sprite) {
                    /* The sprite's square spans 2r; bilinear, zero outside. */
                    double su = (u / (2 * r) + 0.5) * c->sprite_cols - 0.5;
                    double sv = (v / (2 * r) + 0.5) * c->sprite_rows - 0.5;
                    int i0 = (int)floor(su), j0 = (int)floor(sv);
                    double fu = su - i0, fv = sv - j0, s = 0.0;
                    for (int dj = 0; dj < 2; dj++)
                        for (int di = 0; di < 2; di++) {
                            int i = i0 + di, j = j0 + dj;
                            if (i >= 0 && j >= 0 && i < c->sprite_cols && j < c->sprite_rows)
                                s += c->sprite[j * c->sprite_cols + i] / 255.0 * (di ? fu : 1 - fu) *
                                     (dj ? fv : 1 - fv);
                        }
                    alpha = ac_clamp01(s * 6.0);
                    val = ac_clamp01(0.15 + 0.85 * s + c->obj_offset);
                } else {
                    double d = sqrt(u * u + v * v);
                    alpha = ac_clamp01(r + 0.5 - d); /* one-pixel soft edge */
                    /* The object's texture moves with it. */
                    val = ac_clamp01(0.5 + 1.3 * (ac_tex_at(&c->obj, u + 3 * r, v + 3 * r) - 0.5) + c->obj_offset);
                }
                out[y * S + x] = (float)(bg * (1 - alpha) + val * alpha);
            }
        return;
    }
    }
}

/* Too dark or too flat: std-dev < 0.05 or mean outside [0.1, 0.9]. */
static int ac_frame_ok(const float *f, int n)
{
    double m = 0.0, m2 = 0.0;
    for (int i = 0; i < n; i++) {
        m += f[i];
        m2 += (double)f[i] * f[i];
    }
    m /= n;
    m2 = m2 / n - m * m;
    return m >= 0.1 && m <= 0.9 && m2 >= 0.05 * 0.05;
}

/* ------------------------------------------------------------------------ */
/* Encoding                                                                  */

typedef struct ac_encoder {
    AVFormatContext *fc;
    AVCodecContext  *cc;
    AVStream        *st;
    AVFrame         *fr;
    AVPacket        *pkt;
    int64_t          pts;
} ac_encoder;

static const char *ac_codec_encoder(ac_codec c)
{
    return c == AC_H264 ? "libx264" : "mpeg4";
}

static const char *ac_codec_ext(ac_codec c)
{
    return c == AC_H264 ? "mp4" : "avi";
}

static int ac_encoder_drain(ac_encoder *e)
{
    int rc;
    while ((rc = avcodec_receive_packet(e->cc, e->pkt)) == 0) {
        /* Encoders leave duration 0; the mp4 edit list would then end at the
         * last frame's start and decoders would drop that frame. */
        if (e->pkt->duration <= 0)
            e->pkt->duration = 1;
        av_packet_rescale_ts(e->pkt, e->cc->time_base, e->st->time_base);
        e->pkt->stream_index = e->st->index;
        if ((rc = av_interleaved_write_frame(e->fc, e->pkt)) < 0)
            return rc;
    }
    return rc == AVERROR(EAGAIN) || rc == AVERROR_EOF ? 0 : rc;
}

static void ac_encoder_free(ac_encoder *e)
{
    if (e->fc && e->fc->pb)
        avio_closep(&e->fc->pb);
    avformat_free_context(e->fc);
    avcodec_free_context(&e->cc);
    av_frame_free(&e->fr);
    av_packet_free(&e->pkt);
    memset(e, 0, sizeof *e);
}

static int ac_encoder_open(ac_encoder *e, const char *path, const ac_options *o)
{
    const AVCodec *codec = avcodec_find_encoder_by_name(ac_codec_encoder(o->codec));
    int rc;
    memset(e, 0, sizeof *e);
    if (!codec)
        return AVERROR_ENCODER_NOT_FOUND;
    if ((rc = avformat_alloc_output_context2(&e->fc, NULL, NULL, path)) < 0)
        goto fail;
    e->fc->flags |= AVFMT_FLAG_BITEXACT;   /* no version strings or dates: same seed, same bytes */
    if (!(e->st = avformat_new_stream(e->fc, NULL)) || !(e->cc = avcodec_alloc_context3(codec)) ||
        !(e->fr = av_frame_alloc()) || !(e->pkt = av_packet_alloc())) {
        rc = AVERROR(ENOMEM);
        goto fail;
    }
    e->cc->width = e->cc->height = o->size;
    e->cc->pix_fmt = AV_PIX_FMT_YUV420P;
    e->cc->color_range = AVCOL_RANGE_MPEG;
    e->cc->time_base = (AVRational){1, o->fps};
    e->cc->framerate = (AVRational){o->fps, 1};
    e->cc->gop_size = o->fps;
    e->cc->thread_count = 1;               /* deterministic, and frames are tiny */
    e->cc->flags |= AV_CODEC_FLAG_BITEXACT;
    if (o->codec == AC_H264) {
        av_opt_set(e->cc->priv_data, "preset", "fast", 0);
        av_opt_set(e->cc->priv_data, "crf", "18", 0);
        /* No B-frames: dts starts at 0, so the mp4 needs no edit list and
         * every decoder returns all frames. */
        e->cc->max_b_frames = 0;
    } else {
        e->cc->flags |= AV_CODEC_FLAG_QSCALE;
        e->cc->global_quality = FF_QP2LAMBDA * 3;
    }
    if (e->fc->oformat->flags & AVFMT_GLOBALHEADER)
        e->cc->flags |= AV_CODEC_FLAG_GLOBAL_HEADER;
    if ((rc = avcodec_open2(e->cc, codec, NULL)) < 0 ||
        (rc = avcodec_parameters_from_context(e->st->codecpar, e->cc)) < 0)
        goto fail;
    e->st->time_base = e->cc->time_base;
    e->fr->format = AV_PIX_FMT_YUV420P;
    e->fr->width = e->fr->height = o->size;
    if ((rc = av_frame_get_buffer(e->fr, 0)) < 0 || (rc = avio_open(&e->fc->pb, path, AVIO_FLAG_WRITE)) < 0 ||
        (rc = avformat_write_header(e->fc, NULL)) < 0)
        goto fail;
    return 0;
fail:
    ac_encoder_free(e);
    return rc;
}

static int ac_encoder_write(ac_encoder *e, const float *gray)
{
    const int S = e->cc->width;
    int rc = av_frame_make_writable(e->fr);
    if (rc < 0)
        return rc;
    for (int y = 0; y < S; y++) {
        uint8_t *row = e->fr->data[0] + (size_t)y * e->fr->linesize[0];
        for (int x = 0; x < S; x++)
            row[x] = (uint8_t)lrint(16.0 + 219.0 * ac_clamp01(gray[y * S + x])); /* limited range */
    }
    for (int p = 1; p < 3; p++)
        for (int y = 0; y < S / 2; y++)
            memset(e->fr->data[p] + (size_t)y * e->fr->linesize[p], 128, (size_t)S / 2);
    e->fr->pts = e->pts++;
    if ((rc = avcodec_send_frame(e->cc, e->fr)) < 0)
        return rc;
    return ac_encoder_drain(e);
}

static int ac_encoder_close(ac_encoder *e)
{
    int rc = avcodec_send_frame(e->cc, NULL);
    if (rc >= 0)
        rc = ac_encoder_drain(e);
    if (rc >= 0)
        rc = av_write_trailer(e->fc);
    ac_encoder_free(e);
    return rc;
}

/* ------------------------------------------------------------------------ */
/* The corpus                                                                */

static int ac_mkdir(const char *path)
{
    char buf[4096];
    size_t n = strlen(path);
    if (n == 0 || n >= sizeof buf)
        return -1;
    memcpy(buf, path, n + 1);
    for (char *p = buf + 1; *p; p++) {
        if (*p != '/')
            continue;
        *p = 0;
        if (mkdir(buf, 0777) != 0 && errno != EEXIST)
            return -1;
        *p = '/';
    }
    if (mkdir(buf, 0777) != 0 && errno != EEXIST)
        return -1;
    return 0;
}

static double ac_now(void)
{
    struct timeval tv;
    gettimeofday(&tv, NULL);
    return (double)tv.tv_sec + tv.tv_usec * 1e-6;
}

/* Render and encode one clip; its randomness depends only on (seed, split, class, index). */
static int ac_make_clip(const ac_world *w, int cls, int test, int idx, const char *path, float *frames)
{
    const int S = w->o->size, F = w->frames;
    uint64_t st = clapp_mix64(w->o->seed ^ clapp_mix64(0x61637469ull + (uint64_t)test * 1000003ull +
                                             (uint64_t)cls * 7919ull * 1000003ull) ^
                         ((uint64_t)idx * 0x9e3779b97f4a7c15ull));
    ac_clip c;
    ac_encoder enc;
    int rc, tries;
    for (tries = 0; tries < AC_MAX_TRIES; tries++) {
        ac_clip_draw(w, &c, &AC_CLASSES[cls], &st, test);
        ac_render(w, &c, 0, frames);
        ac_render(w, &c, F / 2, frames + (size_t)S * S);
        ac_render(w, &c, F - 1, frames + (size_t)2 * S * S);
        if (ac_frame_ok(frames, S * S) && ac_frame_ok(frames + (size_t)S * S, S * S) &&
            ac_frame_ok(frames + (size_t)2 * S * S, S * S))
            break;
    }
    if (tries == AC_MAX_TRIES && !w->o->quiet)
        fprintf(stderr, "\nmake_action_corpus: %s: no textured window in %d tries, kept a flat one\n", path,
                AC_MAX_TRIES);
    for (int f = 0; f < F; f++)
        ac_render(w, &c, f, frames + (size_t)f * S * S);
    if ((rc = ac_encoder_open(&enc, path, w->o)) < 0)
        return rc;
    for (int f = 0; f < F && rc >= 0; f++)
        rc = ac_encoder_write(&enc, frames + (size_t)f * S * S);
    if (rc < 0) {
        ac_encoder_free(&enc);
        return rc;
    }
    return ac_encoder_close(&enc);
}

static void ac_usage(void)
{
    printf("usage: make_action_corpus --out DIR [options]\n"
           "Renders ten classes of synthetic camera and object motion into videos in the\n"
           "UCF-101 layout, with manifests train.tsv / test.tsv.\n"
           "  --out DIR                   output folder (created)\n"
           "  --clips-per-class N         training clips per class (default 100)\n"
           "  --test-clips-per-class N    test clips per class (default 30)\n"
           "  --seed S                    random seed (default 1); same seed, same corpus\n"
           "  --size PX                   frame width = height, even, 16..1024 (default 64)\n"
           "  --fps N                     frames per second (default 10)\n"
           "  --seconds S                 clip length (default 6)\n"
           "  --codec h264|mpeg4          H.264 (libx264) in .mp4, or MPEG-4 part 2 in .avi (default h264)\n"
           "  --images DIR                textures from the pictures in DIR instead of procedural ones\n"
           "  --sprites FILE              moving objects from an IDX image file (e.g. Fashion-MNIST, .gz ok)\n"
           "  -q, --quiet                 no progress line\n");
}

static int ac_parse_int(const char *s, long lo, long hi, long *v)
{
    char *end;
    errno = 0;
    *v = strtol(s, &end, 10);
    return errno == 0 && end != s && *end == 0 && *v >= lo && *v <= hi ? 0 : -1;
}

static int ac_parse(ac_options *o, int argc, char **argv)
{
    memset(o, 0, sizeof *o);
    o->train_clips = 100;
    o->test_clips = 30;
    o->seed = 1;
    o->size = 64;
    o->fps = 10;
    o->seconds = 6.0;
    o->codec = AC_H264;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        long n;
        if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) {
            ac_usage();
            return 1;
        }
        if (strcmp(a, "-q") == 0 || strcmp(a, "--quiet") == 0) {
            o->quiet = 1;
            continue;
        }
        if (!v || strncmp(a, "--", 2) != 0) {
            fprintf(stderr, "make_action_corpus: %s: %s (see --help)\n", a,
                    strncmp(a, "--", 2) ? "unknown argument" : "needs a value");
            return -1;
        }
        i++;
        if (strcmp(a, "--out") == 0)
            o->out = v;
        else if (strcmp(a, "--images") == 0)
            o->images = v;
        else if (strcmp(a, "--sprites") == 0)
            o->sprites = v;
        else if (strcmp(a, "--clips-per-class") == 0 && ac_parse_int(v, 0, 1000000, &n) == 0)
            o->train_clips = (int)n;
        else if (strcmp(a, "--test-clips-per-class") == 0 && ac_parse_int(v, 0, 1000000, &n) == 0)
            o->test_clips = (int)n;
        else if (strcmp(a, "--size") == 0 && ac_parse_int(v, 16, 1024, &n) == 0 && n % 2 == 0)
            o->size = (int)n;
        else if (strcmp(a, "--fps") == 0 && ac_parse_int(v, 1, 240, &n) == 0)
            o->fps = (int)n;
        else if (strcmp(a, "--seed") == 0 && ac_parse_int(v, 0, 0x7fffffffL, &n) == 0)
            o->seed = (uint64_t)n;
        else if (strcmp(a, "--seconds") == 0) {
            char *end;
            o->seconds = strtod(v, &end);
            if (end == v || *end || !(o->seconds > 0 && o->seconds <= 3600)) {
                fprintf(stderr, "make_action_corpus: --seconds %s: expected a number in (0, 3600]\n", v);
                return -1;
            }
        } else if (strcmp(a, "--codec") == 0 && (strcmp(v, "h264") == 0 || strcmp(v, "mpeg4") == 0))
            o->codec = strcmp(v, "h264") == 0 ? AC_H264 : AC_MPEG4;
        else {
            fprintf(stderr, "make_action_corpus: %s %s: %s (see --help)\n", a, v,
                    strcmp(a, "--size") == 0    ? "expected an even number of pixels in 16..1024"
                    : strcmp(a, "--codec") == 0 ? "expected h264 or mpeg4"
                    : strstr("--clips-per-class --test-clips-per-class --fps --seed", a)
                        ? "expected a non-negative integer in range"
                        : "unknown option");
            return -1;
        }
    }
    if (!o->out) {
        fprintf(stderr, "make_action_corpus: --out DIR is required (see --help)\n");
        return -1;
    }
    if (lround(o->seconds * o->fps) < 2) {
        fprintf(stderr, "make_action_corpus: --seconds %g at --fps %d gives fewer than 2 frames\n", o->seconds,
                o->fps);
        return -1;
    }
    return 0;
}

/* Open DIR/name.tmp for writing; ac_close_rename moves it into place. */
static FILE *ac_open_tmp(const char *dir, const char *name, char *tmp, size_t cap)
{
    FILE *f;
    snprintf(tmp, cap, "%s/%s.tmp", dir, name);
    if (!(f = fopen(tmp, "w")))
        fprintf(stderr, "make_action_corpus: %s: cannot write (%s)\n", tmp, strerror(errno));
    return f;
}

static int ac_close_rename(FILE *f, const char *dir, const char *name, const char *tmp)
{
    char dst[4096];
    snprintf(dst, sizeof dst, "%s/%s", dir, name);
    if (fclose(f) != 0 || rename(tmp, dst) != 0) {
        fprintf(stderr, "make_action_corpus: %s: cannot write (%s)\n", dst, strerror(errno));
        return -1;
    }
    return 0;
}

static int ac_write_lists(const ac_options *o)
{
    static const char *names[6] = {"train.tsv", "test.tsv", "classInd.txt", "trainlist01.txt", "testlist01.txt",
                                   "README.txt"};
    char tmp[6][4096];
    FILE *f[6] = {NULL};
    const char *ext = ac_codec_ext(o->codec);
    int status = 0;
    for (int i = 0; i < 6; i++)
        if (!(f[i] = ac_open_tmp(o->out, names[i], tmp[i], sizeof tmp[i])))
            status = -1;
    if (status == 0) {
        for (int c = 0; c < AC_N_CLASSES; c++) {
            const char *n = AC_CLASSES[c].name;
            fprintf(f[2], "%d %s\n", c + 1, n);
            for (int i = 0; i < o->train_clips; i++) {
                fprintf(f[0], "%s/v_%s_train_%04d.%s\t%s\n", n, n, i, ext, n);
                fprintf(f[3], "%s/v_%s_train_%04d.%s %d\n", n, n, i, ext, c + 1);
            }
            for (int i = 0; i < o->test_clips; i++) {
                fprintf(f[1], "%s/v_%s_test_%04d.%s\t%s\n", n, n, i, ext, n);
                fprintf(f[4], "%s/v_%s_test_%04d.%s\n", n, n, i, ext);
            }
        }
        fprintf(f[5],
                "Synthetic action corpus written by make_action_corpus (clapp).\n"
                "seed %llu, %dx%d gray, %d fps, %.3g s per clip (%ld frames), %s, textures: %s%s%s\n"
                "%d training and %d test clips per class; test clips never use a training texture.\n\n"
                "Classes (pan/rotate/zoom are named by the camera's motion):\n",
                (unsigned long long)o->seed, o->size, o->size, o->fps, o->seconds, lround(o->seconds * o->fps),
                ac_codec_encoder(o->codec), o->images ? o->images : "procedural",
                o->sprites ? ", sprites: " : "", o->sprites ? o->sprites : "", o->train_clips, o->test_clips);
        for (int c = 0; c < AC_N_CLASSES; c++)
            fprintf(f[5], "  %2d %-13s %s\n", c + 1, AC_CLASSES[c].name, AC_CLASSES[c].what);
    }
    for (int i = 0; i < 6; i++)
        if (f[i] && ac_close_rename(f[i], o->out, names[i], tmp[i]) < 0)
            status = -1;
    return status;
}

int main(int argc, char **argv)
{
    ac_options o;
    ac_world w;
    float *frames = NULL;
    char path[4096], err[AV_ERROR_MAX_STRING_SIZE];
    int rc = ac_parse(&o, argc, argv), status = 1, total, done = 0;
    double t0 = ac_now(), last = 0;

    if (rc != 0)
        return rc > 0 ? 0 : 2;
    memset(&w, 0, sizeof w);
    w.o = &o;
    w.frames = (int)lround(o.seconds * o.fps);
    av_log_set_level(AV_LOG_ERROR);
    if (!avcodec_find_encoder_by_name(ac_codec_encoder(o.codec))) {
        fprintf(stderr, "make_action_corpus: the encoder %s is not in this FFmpeg build%s\n",
                ac_codec_encoder(o.codec), o.codec == AC_H264 ? "; try --codec mpeg4" : "");
        return 1;
    }
    if (ac_mkdir(o.out) != 0 || access(o.out, W_OK) != 0) {
        fprintf(stderr, "make_action_corpus: %s: cannot create or write the output folder (%s)\n", o.out,
                strerror(errno));
        return 1;
    }
    for (int c = 0; c < AC_N_CLASSES; c++) {
        snprintf(path, sizeof path, "%s/%s", o.out, AC_CLASSES[c].name);
        if (ac_mkdir(path) != 0) {
            fprintf(stderr, "make_action_corpus: %s: cannot create (%s)\n", path, strerror(errno));
            return 1;
        }
    }
    if (o.images && ac_images_load(o.images, &w.images, o.size, o.quiet) < 0)
        goto done;
    if (o.sprites && ac_sprites_load(o.sprites, &w.sprites) < 0)
        goto done;
    if (!(frames = malloc((size_t)(w.frames < 3 ? 3 : w.frames) * o.size * o.size * sizeof(float)))) {
        fprintf(stderr, "make_action_corpus: out of memory for %d frames\n", w.frames);
        goto done;
    }
    total = AC_N_CLASSES * (o.train_clips + o.test_clips);
    for (int c = 0; c < AC_N_CLASSES; c++)
        for (int test = 0; test < 2; test++)
            for (int i = 0; i < (test ? o.test_clips : o.train_clips); i++) {
                const char *n = AC_CLASSES[c].name;
                snprintf(path, sizeof path, "%s/%s/v_%s_%s_%04d.%s", o.out, n, n, test ? "test" : "train", i,
                         ac_codec_ext(o.codec));
                if ((rc = ac_make_clip(&w, c, test, i, path, frames)) < 0) {
                    av_strerror(rc, err, sizeof err);
                    fprintf(stderr, "%smake_action_corpus: %s: cannot encode (%s)\n", o.quiet ? "" : "\n", path,
                            err);
                    goto done;
                }
                done++;
                if (!o.quiet && (ac_now() - last > 0.5 || done == total)) {
                    double el = ac_now() - t0;
                    last = ac_now();
                    fprintf(stderr, "\rmake_action_corpus: %d/%d clips (%s), %.1f clips/s, %.0f s left   ", done,
                            total, n, done / fmax(el, 1e-9), (total - done) * el / done);
                    if (!isatty(2) && done != total)
                        fputc('\n', stderr);
                }
            }
    if (!o.quiet)
        fputc('\n', stderr);
    if (ac_write_lists(&o) < 0)
        goto done;
    status = 0;
done:
    free(frames);
    ac_images_free(&w.images);
    free(w.sprites.px);
    return status;
}
