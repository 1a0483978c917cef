/* clapp core — media decoders (see decode.h).
 *
 * The FFmpeg backend reproduces what the ffmpeg 5.1 command line does, so
 * that `ffmpeg -i IN -ac 1 -ar R -f f32le` and
 * `ffmpeg -i IN -vf fps=F,scale=W:H,format=gray -f rawvideo` are the reference:
 *  - audio: one libswresample context with default options converts the
 *    decoder's format, layout and rate to mono float at the output rate (what
 *    the auto-inserted aresample filter does), flushed at the end; encoder
 *    delay and padding are dropped by libavcodec from the packets' side data.
 *  - video: input timestamps are shifted by the file's start time, the fps
 *    filter's drop/duplicate rule runs on the decoded frames' best-effort pts
 *    (rounding to nearest, end of stream at last pts + duration), and each
 *    output frame is scaled with a libswscale context set up like vf_scale's
 *    (bicubic, MPEG-2 chroma siting for yuv420p, colour matrix and range
 *    from the frame).
 * Memory: the audio FIFO holds the converted output of one decoded frame (or
 * one 4096-frame libsndfile read); video keeps at most two decoded frames
 * (the fps rule needs the next one) and one scaled picture.
 */
#include "media/decode.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <libavcodec/avcodec.h>
#include <libavformat/avformat.h>
#include <libavutil/channel_layout.h>
#include <libavutil/imgutils.h>
#include <libavutil/avstring.h>
#include <libavutil/mathematics.h>
#include <libavutil/opt.h>
#include <libavutil/time.h>
#include <libswresample/swresample.h>
#include <libswscale/swscale.h>
#include <sndfile.h>

#include "clapp/plugin.h"
#include "clapp/plugin_util.h"
#include "media/wav_header.h"

#define SNDFILE_CHUNK 4096 /* frames per sf_readf_float call */

/* Bounds on the video output a file's timestamps may ask for: one input
 * frame lasts at most VIDEO_MAX_FRAME_SECONDS of output (a stream header
 * whose frame rate says more is refused at open), and a whole file at most
 * VIDEO_DECLARED_FACTOR times the duration its container declares plus
 * VIDEO_DECLARED_SLACK seconds. */
#define VIDEO_MAX_FRAME_SECONDS 600
#define VIDEO_DECLARED_FACTOR 2
#define VIDEO_DECLARED_SLACK 60

struct clapp_decoder {
    clapp_decode_params p;
    char               *name;       /* the url as given, for messages */
    int                 use_sndfile;

    /* FFmpeg demuxer/decoder */
    AVFormatContext    *fmt;
    AVCodecContext     *cc;
    AVStream           *st;
    AVPacket           *pkt;
    AVFrame            *frame;      /* receives decoded frames */
    int                 input_eof;  /* flush packet sent to the decoder */
    int                 decoder_eof;

    /* libsndfile */
    SNDFILE            *sf;
    SF_INFO             sfinfo;
    float              *sfbuf;      /* SNDFILE_CHUNK interleaved frames */

    /* audio conversion */
    SwrContext         *swr;
    AVChannelLayout     swr_layout;
    int                 swr_fmt, swr_rate;
    float              *fifo;       /* converted samples not yet returned */
    int64_t             fifo_cap, fifo_len, fifo_pos;

    /* video: fps rule state (times in the output time base 1/fps) */
    AVRational          out_tb;
    int64_t             ts_offset;  /* added to decoded pts (stream time base) */
    AVFrame            *held[2];    /* buffered frames, held[0] is the current one */
    int64_t             held_pts[2];
    int                 n_held;
    int64_t             repeats;    /* output frames made of held[0] so far */
    int64_t             next_pts;   /* pts of the next output frame, or AV_NOPTS_VALUE */
    int64_t             cli_pts, cli_next_pts; /* ffmpeg's ist->pts/next_pts, AV_TIME_BASE */
    int64_t             eof_pts;    /* end of stream in the output time base */
    int                 have_eof;
    struct SwsContext  *sws;
    int                 sws_w, sws_h, sws_fmt, sws_range, sws_space;
    uint8_t            *pic[4];     /* scaled picture (GRAY8 or GBRP) */
    int                 pic_ls[4];
    int                 pic_valid;  /* pic holds held[0] scaled */

    /* blocking I/O: FIFOs read through our own AVIOContext; the interrupt
     * callback (FIFOs and network protocols) gives up at the deadline or
     * when p.stop is set */
    int                 fifo_fd;    /* -1 if the input is not a FIFO */
    int                 fifo_data;  /* a writer has sent data */
    AVIOContext        *fifo_io;
    /* clapp_decoder_open_memory: the caller's bytes, read through our own
     * seekable AVIOContext */
    const uint8_t      *mem;
    size_t              mem_size, mem_pos;
    AVIOContext        *mem_io;
    int64_t             io_deadline; /* av_gettime_relative() limit of the current wait; 0: none */
    int                 io_interrupted; /* 1: timeout, 2: stop, 3: the host's interrupt */
    int                 can_wait;   /* a FIFO, standard input or a URL: reads may wait for data
                                     * (a regular file's never do; the host's interrupt leaves
                                     * them alone) */

    /* counters and sticky state */
    int64_t             n_out;      /* output frames produced (samples or pictures) */
    int64_t             video_out;  /* video frames emitted */
    int64_t             video_max;  /* bound on video_out from the declared duration; -1 none */
    int64_t             n_decoded;  /* decoded input frames */
    int64_t             n_errors;   /* skipped decoding errors */
    double              pkt_seconds; /* duration of the chosen stream's packets read */
    int64_t             n_pkts;
    double              lost_seconds; /* duration of the packets whose decoding failed */
    double              declared_seconds; /* what the header declares; < 0 unknown */
    int                 declared_exact;   /* 1: from a size field (WAV), not a container estimate */
    int                 is_file;    /* a plain path to a regular file */
    char                last_error[128];
    int                 done;       /* end reached and reported */
    int                 err_code;
    char                err_msg[512];
};

/* ------------------------------------------------------------------------ */
/* Errors                                                                    */


static const char *av_errstr(int code, char *buf, size_t len)
{
    if (av_strerror(code, buf, len) < 0)
        snprintf(buf, len, "error %d", code);
    return buf;
}

/* Remember a failure so every later read returns it again. */
static int dec_fail(clapp_decoder *dec, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static int dec_fail(clapp_decoder *dec, int code, const char *fmt, ...)
{
    char    cause[400];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(cause, sizeof(cause), fmt, ap);
    va_end(ap);
    snprintf(dec->err_msg, sizeof(dec->err_msg), "%s: %s", dec->name, cause);
    dec->err_code = code;
    return code;
}

/* A damaged packet was skipped: its duration (or, unknown, the mean of the
 * packets so far) counts as lost. */
static void count_error(clapp_decoder *dec, int averr, double seconds)
{
    dec->n_errors++;
    if (seconds <= 0 && dec->n_pkts > 0)
        seconds = dec->pkt_seconds / (double)dec->n_pkts;
    dec->lost_seconds += seconds > 0 ? seconds : 0;
    av_errstr(averr, dec->last_error, sizeof(dec->last_error));
}

/* ------------------------------------------------------------------------ */
/* Opening                                                                   */

static int is_url(const char *s)
{
    return strstr(s, "://") != NULL || strncmp(s, "pipe:", 5) == 0 || strncmp(s, "file:", 5) == 0;
}

/* Plain paths: give the common failures a clear cause before FFmpeg does. */
static int check_path(clapp_decoder *dec, const char *url)
{
    struct stat sb;
    if (strcmp(url, "-") == 0 || is_url(url))
        return 0;
    if (stat(url, &sb) != 0) {
        if (errno == ENOENT || errno == ENOTDIR)
            return dec_fail(dec, CLAPP_E_NOTFOUND, "no such file");
        return dec_fail(dec, CLAPP_E_IO, "cannot open (%s)", strerror(errno));
    }
    if (S_ISDIR(sb.st_mode))
        return dec_fail(dec, CLAPP_E_IO, "is a directory");
    if (S_ISREG(sb.st_mode) && sb.st_size == 0)
        return dec_fail(dec, CLAPP_E_FORMAT, "empty file");
    dec->is_file = S_ISREG(sb.st_mode);
    if (access(url, R_OK) != 0)
        return dec_fail(dec, CLAPP_E_IO, "cannot open (%s)", strerror(errno));
    return 0;
}

/* FFmpeg's interrupt callback: 1 ends the blocking call. */
static int io_interrupt(void *opaque)
{
    clapp_decoder *dec = opaque;
    if (dec->p.stop && atomic_load(dec->p.stop))
        dec->io_interrupted = 2;
    else if (dec->can_wait && dec->p.interrupt && dec->p.interrupt(dec->p.interrupt_user))
        dec->io_interrupted = 3;
    else if (dec->io_deadline > 0 && av_gettime_relative() > dec->io_deadline)
        dec->io_interrupted = 1;
    return dec->io_interrupted != 0;
}

/* A blocking step starts: the io_timeout counts from now. */
static void io_arm(clapp_decoder *dec)
{
    dec->io_deadline = dec->p.io_timeout > 0 ? av_gettime_relative() + (int64_t)(dec->p.io_timeout * 1e6) : 0;
}

/* Why a blocking call was interrupted, for the error message. */
static int io_fail(clapp_decoder *dec)
{
    if (dec->io_interrupted == 2)
        return dec_fail(dec, CLAPP_E_IO, "stopped while waiting for data");
    if (dec->io_interrupted == 3)
        return dec_fail(dec, CLAPP_E_IO, "interrupted while waiting for data");
    return dec_fail(dec, CLAPP_E_IO, "no data within %g s (source io_timeout)", dec->p.io_timeout);
}

/* Read callback of a FIFO, opened O_NONBLOCK so that neither a missing
 * writer nor a stalled one blocks past the deadline or a stop. */
static int fifo_read(void *opaque, uint8_t *buf, int size)
{
    clapp_decoder *dec = opaque;
    for (;;) {
        struct pollfd pfd = {dec->fifo_fd, POLLIN, 0};
        ssize_t r = read(dec->fifo_fd, buf, (size_t)size);
        if (r > 0) {
            dec->fifo_data = 1;
            io_arm(dec);
            return (int)r;
        }
        if (r < 0 && errno != EAGAIN && errno != EINTR)
            return AVERROR(errno);
        /* 0 bytes: end of data once a writer has come and gone (POLLHUP);
         * before any writer, wait as for data. */
        if (r == 0 && poll(&pfd, 1, 0) > 0 && (pfd.revents & POLLHUP))
            return AVERROR_EOF;
        if (io_interrupt(dec))
            return AVERROR_EXIT;
        poll(&pfd, 1, 50);
        if (r == 0 && (pfd.revents & POLLHUP) && !(pfd.revents & POLLIN))
            return AVERROR_EOF;
    }
}

/* Read and seek callbacks over the bytes of clapp_decoder_open_memory. */
static int mem_read(void *opaque, uint8_t *buf, int size)
{
    clapp_decoder *dec = opaque;
    size_t n = dec->mem_size - dec->mem_pos;
    if (n == 0)
        return AVERROR_EOF;
    if (n > (size_t)size)
        n = (size_t)size;
    memcpy(buf, dec->mem + dec->mem_pos, n);
    dec->mem_pos += n;
    return (int)n;
}

static int64_t mem_seek(void *opaque, int64_t offset, int whence)
{
    clapp_decoder *dec = opaque;
    int64_t base;
    if (whence & AVSEEK_SIZE)
        return (int64_t)dec->mem_size;
    switch (whence & ~AVSEEK_FORCE) {
    case SEEK_SET: base = 0; break;
    case SEEK_CUR: base = (int64_t)dec->mem_pos; break;
    case SEEK_END: base = (int64_t)dec->mem_size; break;
    default: return AVERROR(EINVAL);
    }
    if (offset < -base || offset > (int64_t)dec->mem_size - base)
        return AVERROR(EINVAL);
    dec->mem_pos = (size_t)(base + offset);
    return (int64_t)dec->mem_pos;
}

static int open_memory(clapp_decoder *dec)
{
    uint8_t *buf = av_malloc(1 << 14);
    if (!buf || !(dec->mem_io = avio_alloc_context(buf, 1 << 14, 0, dec, mem_read, NULL, mem_seek))) {
        av_free(buf);
        return dec_fail(dec, CLAPP_E_NOMEM, "out of memory");
    }
    dec->fmt->pb = dec->mem_io;
    dec->fmt->flags |= AVFMT_FLAG_CUSTOM_IO;
    return 0;
}

/* Plain paths that are FIFOs get our own reader (see fifo_read). */
static int open_fifo(clapp_decoder *dec, const char *url)
{
    struct stat sb;
    uint8_t *buf;
    dec->fifo_fd = -1;
    if (strcmp(url, "-") == 0 || is_url(url) || stat(url, &sb) != 0 || !S_ISFIFO(sb.st_mode))
        return 0;
    if ((dec->fifo_fd = open(url, O_RDONLY | O_NONBLOCK | O_CLOEXEC)) < 0)
        return dec_fail(dec, CLAPP_E_IO, "cannot open (%s)", strerror(errno));
    if (!(buf = av_malloc(1 << 16)) ||
        !(dec->fifo_io = avio_alloc_context(buf, 1 << 16, 0, dec, fifo_read, NULL, NULL))) {
        av_free(buf);
        return dec_fail(dec, CLAPP_E_NOMEM, "out of memory");
    }
    dec->fmt->pb = dec->fifo_io;
    dec->fmt->flags |= AVFMT_FLAG_CUSTOM_IO;
    return 0;
}

static int open_ffmpeg(clapp_decoder *dec, const char *url)
{
    enum AVMediaType type = dec->p.kind == CLAPP_MEDIA_VIDEO ? AVMEDIA_TYPE_VIDEO : AVMEDIA_TYPE_AUDIO;
    const char      *what = type == AVMEDIA_TYPE_VIDEO ? "video" : "audio";
    const AVCodec   *codec = NULL;
    char            *ffurl = NULL;
    char             eb[128];
    int              ret, idx;

    /* "-" is standard input as for the ffmpeg CLI; existing paths get
     * "file:" so a ':' in a file name is not taken for a protocol. */
    if (dec->mem)
        ffurl = av_strdup("");
    else if (strcmp(url, "-") == 0)
        ffurl = av_strdup("pipe:0");
    else if (!is_url(url))
        ffurl = av_asprintf("file:%s", url);
    else
        ffurl = av_strdup(url);
    if (!ffurl) {
        ret = dec_fail(dec, CLAPP_E_NOMEM, "out of memory");
        goto fail;
    }

    /* Never seeking, we need no growing seek index: cap it early (the
     * default cap is 1 MB, reached with reallocations in the steady state). */
    dec->fmt = avformat_alloc_context();
    if (!dec->fmt) {
        ret = dec_fail(dec, CLAPP_E_NOMEM, "out of memory");
        goto fail;
    }
    dec->fmt->max_index_size = 1 << 14;
    dec->fmt->interrupt_callback.callback = io_interrupt;
    dec->fmt->interrupt_callback.opaque = dec;
    if ((ret = dec->mem ? open_memory(dec) : open_fifo(dec, url)) < 0)
        goto fail;
    dec->can_wait = !dec->mem && (dec->fifo_fd >= 0 || strcmp(url, "-") == 0 ||
                                  (is_url(url) && strncmp(url, "file:", 5) != 0));
    io_arm(dec);
    ret = avformat_open_input(&dec->fmt, ffurl, NULL, NULL);
    if (ret < 0 && dec->io_interrupted) {
        ret = io_fail(dec);
        goto fail;
    }
    if (ret < 0) {
        if (ret == AVERROR(ENOENT))
            ret = dec_fail(dec, CLAPP_E_NOTFOUND, "no such file");
        else if (ret == AVERROR_INVALIDDATA)
            ret = dec_fail(dec, CLAPP_E_FORMAT, "not a media file (%s)", av_errstr(ret, eb, sizeof(eb)));
        else
            ret = dec_fail(dec, CLAPP_E_IO, "cannot open (%s)", av_errstr(ret, eb, sizeof(eb)));
        goto fail;
    }
    /* FFmpeg reads any .txt as ANSI art (the tty demuxer); text is not media here. */
    if (strcmp(dec->fmt->iformat->name, "tty") == 0) {
        ret = dec_fail(dec, CLAPP_E_FORMAT, "not a media file (text)");
        goto fail;
    }
    io_arm(dec);
    ret = avformat_find_stream_info(dec->fmt, NULL);
    if (ret < 0 && dec->io_interrupted) {
        ret = io_fail(dec);
        goto fail;
    }
    if (ret < 0) {
        ret = dec_fail(dec, CLAPP_E_FORMAT, "not a media file (%s)", av_errstr(ret, eb, sizeof(eb)));
        goto fail;
    }
    idx = av_find_best_stream(dec->fmt, type, -1, -1, &codec, 0);
    if (idx == AVERROR_STREAM_NOT_FOUND) {
        /* A stream of the kind may exist whose parameters could not be read. */
        int present = 0;
        for (unsigned i = 0; i < dec->fmt->nb_streams; i++)
            present |= dec->fmt->streams[i]->codecpar->codec_type == type;
        if (present)
            ret = dec_fail(dec, CLAPP_E_FORMAT, "truncated or corrupt data (%s stream parameters unreadable)", what);
        else
            ret = dec_fail(dec, CLAPP_E_FORMAT, "no %s stream", what);
        goto fail;
    }
    if (idx < 0 || !codec) {
        int sidx = av_find_best_stream(dec->fmt, type, -1, -1, NULL, 0);
        ret = dec_fail(dec, CLAPP_E_UNSUPPORTED, "no decoder for the %s codec %s", what,
                       sidx >= 0 ? avcodec_get_name(dec->fmt->streams[sidx]->codecpar->codec_id) : "?");
        goto fail;
    }
    dec->st = dec->fmt->streams[idx];
    /* Only the chosen stream is demuxed further. */
    for (unsigned i = 0; i < dec->fmt->nb_streams; i++)
        if ((int)i != idx)
            dec->fmt->streams[i]->discard = AVDISCARD_ALL;

    dec->cc = avcodec_alloc_context3(codec);
    dec->pkt = av_packet_alloc();
    dec->frame = av_frame_alloc();
    if (!dec->cc || !dec->pkt || !dec->frame) {
        ret = dec_fail(dec, CLAPP_E_NOMEM, "out of memory");
        goto fail;
    }
    ret = avcodec_parameters_to_context(dec->cc, dec->st->codecpar);
    if (ret < 0) {
        ret = dec_fail(dec, CLAPP_E_FORMAT, "bad codec parameters (%s)", av_errstr(ret, eb, sizeof(eb)));
        goto fail;
    }
    dec->cc->pkt_timebase = dec->st->time_base;
    ret = avcodec_open2(dec->cc, codec, NULL);
    if (ret < 0) {
        ret = dec_fail(dec, CLAPP_E_FORMAT, "cannot open the %s decoder %s (%s)", what, codec->name,
                       av_errstr(ret, eb, sizeof(eb)));
        goto fail;
    }

    if (type == AVMEDIA_TYPE_VIDEO) {
        /* A header whose frame rate makes one frame last longer than any
         * output may (2/214748365 fps: 3.4 years) is refused at once. */
        AVRational fr = dec->st->avg_frame_rate.num > 0 && dec->st->avg_frame_rate.den > 0 ?
                        dec->st->avg_frame_rate : dec->st->r_frame_rate;
        if (fr.num > 0 && fr.den > 0 && (double)fr.den / fr.num > VIDEO_MAX_FRAME_SECONDS) {
            ret = dec_fail(dec, CLAPP_E_FORMAT, "implausible frame rate %d/%d in the stream header "
                           "(a frame would last %.3g s, more than %d s)", fr.num, fr.den,
                           (double)fr.den / fr.num, VIDEO_MAX_FRAME_SECONDS);
            goto fail;
        }
        /* The CLI shifts all timestamps so the file starts at 0. */
        if (dec->fmt->start_time != AV_NOPTS_VALUE)
            dec->ts_offset = av_rescale_q(-dec->fmt->start_time, AV_TIME_BASE_Q, dec->st->time_base);
        for (int i = 0; i < 2; i++) {
            dec->held[i] = av_frame_alloc();
            if (!dec->held[i]) {
                ret = dec_fail(dec, CLAPP_E_NOMEM, "out of memory");
                goto fail;
            }
        }
    }
    ret = 0;
fail:
    av_free(ffurl);
    return ret;
}

static int open_sndfile(clapp_decoder *dec, const char *url)
{
    int ret;
    memset(&dec->sfinfo, 0, sizeof(dec->sfinfo));
    if (strcmp(url, "-") == 0)
        dec->sf = sf_open_fd(STDIN_FILENO, SFM_READ, &dec->sfinfo, 0);
    else
        dec->sf = sf_open(url, SFM_READ, &dec->sfinfo);
    if (!dec->sf) {
        ret = dec_fail(dec, CLAPP_E_FORMAT, "not a media file (libsndfile: %s)", sf_strerror(NULL));
        goto fail;
    }
    if (dec->sfinfo.channels < 1 || dec->sfinfo.samplerate < 1) {
        ret = dec_fail(dec, CLAPP_E_FORMAT, "bad header (%d channels, %d Hz)", dec->sfinfo.channels,
                       dec->sfinfo.samplerate);
        goto fail;
    }
    dec->sfbuf = malloc((size_t)SNDFILE_CHUNK * (size_t)dec->sfinfo.channels * sizeof(float));
    if (!dec->sfbuf) {
        ret = dec_fail(dec, CLAPP_E_NOMEM, "out of memory");
        goto fail;
    }
    dec->use_sndfile = 1;
    ret = 0;
fail:
    return ret;
}

static void close_backends(clapp_decoder *dec)
{
    avcodec_free_context(&dec->cc);
    avformat_close_input(&dec->fmt);
    if (dec->fifo_io) {
        av_freep(&dec->fifo_io->buffer);
        avio_context_free(&dec->fifo_io);
    }
    if (dec->mem_io) {
        av_freep(&dec->mem_io->buffer);
        avio_context_free(&dec->mem_io);
    }
    if (dec->fifo_fd >= 0)
        close(dec->fifo_fd);
    dec->fifo_fd = -1;
    dec->st = NULL;
    if (dec->sf)
        sf_close(dec->sf);
    dec->sf = NULL;
}

static int check_params(const clapp_decode_params *p, char *err, size_t errlen, const char *url)
{
    if (p->backend != CLAPP_DECODE_AUTO && p->backend != CLAPP_DECODE_FFMPEG &&
        p->backend != CLAPP_DECODE_SNDFILE) {
        clapp_set_err(err, errlen, "%s: unknown decode backend %d", url, (int)p->backend);
        return CLAPP_E_INVAL;
    }
    if (p->kind == CLAPP_MEDIA_AUDIO) {
        if (p->rate <= 0) {
            clapp_set_err(err, errlen, "%s: output sample rate must be > 0 (got %d)", url, p->rate);
            return CLAPP_E_INVAL;
        }
        return 0;
    }
    if (p->kind != CLAPP_MEDIA_VIDEO) {
        clapp_set_err(err, errlen, "%s: unknown media kind %d", url, (int)p->kind);
        return CLAPP_E_INVAL;
    }
    if (p->backend == CLAPP_DECODE_SNDFILE) {
        clapp_set_err(err, errlen, "%s: the sndfile backend decodes audio only", url);
        return CLAPP_E_UNSUPPORTED;
    }
    if (p->width <= 0 || p->height <= 0 || p->width > 16384 || p->height > 16384) {
        clapp_set_err(err, errlen, "%s: bad output size %dx%d", url, p->width, p->height);
        return CLAPP_E_INVAL;
    }
    if (!(p->fps > 0.0 && p->fps < 1e6)) {
        clapp_set_err(err, errlen, "%s: output frame rate must be > 0 (got %g)", url, p->fps);
        return CLAPP_E_INVAL;
    }
    if (p->channels != 1 && p->channels != 3) {
        clapp_set_err(err, errlen, "%s: video channels must be 1 (gray) or 3 (RGB), got %d", url, p->channels);
        return CLAPP_E_INVAL;
    }
    return 0;
}

/* What the header declares (decode.h: clapp_decoder_declared_seconds). */
static void find_declared(clapp_decoder *dec, const char *url)
{
    const int wav = dec->use_sndfile ? (dec->sfinfo.format & SF_FORMAT_TYPEMASK) == SF_FORMAT_WAV
                                     : strcmp(dec->fmt->iformat->name, "wav") == 0;
    dec->declared_seconds = -1;
    if (wav && dec->is_file && (dec->declared_seconds = clapp_wav_declared_seconds(url)) >= 0) {
        dec->declared_exact = 1;
        return;
    }
    if (dec->use_sndfile) {
        if (dec->sfinfo.seekable && dec->sfinfo.frames > 0 && dec->sfinfo.frames != SF_COUNT_MAX)
            dec->declared_seconds = (double)dec->sfinfo.frames / dec->sfinfo.samplerate;
        return;
    }
    /* A live input declares nothing; a length estimated from the bit rate
     * and the file size is no declaration (a cut file shrinks it too). */
    if (!dec->fmt->pb || !(dec->fmt->pb->seekable & AVIO_SEEKABLE_NORMAL) ||
        dec->fmt->duration_estimation_method == AVFMT_DURATION_FROM_BITRATE)
        return;
    if (dec->st->duration != AV_NOPTS_VALUE && dec->st->duration > 0)
        dec->declared_seconds = (double)dec->st->duration * av_q2d(dec->st->time_base);
    else if (dec->fmt->duration != AV_NOPTS_VALUE && dec->fmt->duration > 0)
        dec->declared_seconds = (double)dec->fmt->duration / AV_TIME_BASE;
}

/* clapp_decoder_open and clapp_decoder_open_memory (mem != NULL). */
static int decoder_open(clapp_decoder **out, const char *url, const uint8_t *mem, size_t mem_size,
                        const clapp_decode_params *p, char *err, size_t errlen)
{
    clapp_decoder *dec = NULL;
    int            ret;

    if (!out || !url || !p) {
        clapp_set_err(err, errlen, "decode: missing argument");
        return CLAPP_E_INVAL;
    }
    *out = NULL;
    ret = check_params(p, err, errlen, url);
    if (ret < 0)
        return ret;

    dec = calloc(1, sizeof(*dec));
    if (!dec) {
        clapp_set_err(err, errlen, "%s: out of memory", url);
        return CLAPP_E_NOMEM;
    }
    dec->p = *p;
    dec->name = strdup(strcmp(url, "-") == 0 ? "stdin" : url);
    if (!dec->name) {
        clapp_set_err(err, errlen, "%s: out of memory", url);
        ret = CLAPP_E_NOMEM;
        goto fail;
    }
    dec->next_pts = AV_NOPTS_VALUE;
    dec->cli_pts = dec->cli_next_pts = AV_NOPTS_VALUE;
    dec->swr_fmt = -1;
    dec->fifo_fd = -1;
    dec->mem = mem;
    dec->mem_size = mem_size;

    ret = mem ? 0 : check_path(dec, url);
    if (ret < 0)
        goto fail_msg;

    if (mem && p->backend == CLAPP_DECODE_SNDFILE) {
        ret = dec_fail(dec, CLAPP_E_UNSUPPORTED, "the sndfile backend reads files, not memory");
    } else if (p->backend == CLAPP_DECODE_SNDFILE) {
        ret = open_sndfile(dec, url);
    } else {
        ret = open_ffmpeg(dec, url);
        /* AUTO: libsndfile gets a chance at audio FFmpeg could not read
         * (not for standard input, whose bytes FFmpeg has consumed). */
        if (ret == CLAPP_E_FORMAT && p->backend == CLAPP_DECODE_AUTO && p->kind == CLAPP_MEDIA_AUDIO &&
            strcmp(url, "-") != 0 && !is_url(url) && dec->fifo_fd < 0 && !mem) {
            int  code = dec->err_code;
            char msg[sizeof(dec->err_msg)];
            memcpy(msg, dec->err_msg, sizeof(msg));
            close_backends(dec);
            ret = open_sndfile(dec, url);
            if (ret < 0) { /* report FFmpeg's reason, the primary backend */
                memcpy(dec->err_msg, msg, sizeof(msg));
                ret = dec->err_code = code;
            }
        }
    }
    if (ret < 0)
        goto fail_msg;
    find_declared(dec, url);
    dec->video_max = -1;
    if (p->kind == CLAPP_MEDIA_VIDEO && dec->declared_seconds > 0) {
        /* (a declared duration past 1e15 frames bounds nothing: no bound) */
        double frames = (VIDEO_DECLARED_FACTOR * dec->declared_seconds + VIDEO_DECLARED_SLACK) * p->fps;
        if (frames < 1e15)
            dec->video_max = (int64_t)frames + 1;
    }

    if (p->kind == CLAPP_MEDIA_VIDEO) {
        dec->out_tb = av_inv_q(av_d2q(p->fps, 1001000));
        ret = av_image_alloc(dec->pic, dec->pic_ls, p->width, p->height,
                             p->channels == 1 ? AV_PIX_FMT_GRAY8 : AV_PIX_FMT_GBRP, 64);
        if (ret < 0) {
            ret = dec_fail(dec, CLAPP_E_NOMEM, "out of memory");
            goto fail_msg;
        }
    }
    dec->err_code = 0;
    dec->err_msg[0] = '\0';
    *out = dec;
    return 0;

fail_msg:
    clapp_set_err(err, errlen, "%s", dec->err_msg);
fail:
    clapp_decoder_close(dec);
    return ret;
}

int clapp_decoder_open(clapp_decoder **out, const char *url, const clapp_decode_params *p,
                       char *err, size_t errlen)
{
    return decoder_open(out, url, NULL, 0, p, err, errlen);
}

int clapp_decoder_open_memory(clapp_decoder **out, const char *name, const void *data, size_t size,
                              const clapp_decode_params *p, char *err, size_t errlen)
{
    static const uint8_t none[1];
    return decoder_open(out, name, size ? data : none, size, p, err, errlen);
}

/* ------------------------------------------------------------------------ */
/* Decoding (FFmpeg): next decoded frame of the chosen stream                */

/* Returns 1 with a frame in dec->frame, 0 at the end, or a CLAPP_E_*. Errors
 * the CLI would skip (bad packets) are counted and skipped. */
static int ffmpeg_next_frame(clapp_decoder *dec)
{
    char eb[128];
    int  ret;

    for (;;) {
        if (dec->decoder_eof)
            return 0;
        ret = avcodec_receive_frame(dec->cc, dec->frame);
        if (ret >= 0) {
            dec->n_decoded++;
            return 1;
        }
        if (ret == AVERROR_EOF) {
            dec->decoder_eof = 1;
            return 0;
        }
        if (ret != AVERROR(EAGAIN)) {
            count_error(dec, ret, 0);
            if (dec->input_eof) { /* a failure while draining ends the stream */
                dec->decoder_eof = 1;
                return 0;
            }
            continue;
        }
        if (dec->input_eof) { /* cannot happen after a flush; do not spin */
            dec->decoder_eof = 1;
            return 0;
        }
        io_arm(dec);
        ret = av_read_frame(dec->fmt, dec->pkt);
        if (ret < 0 && dec->io_interrupted)
            return io_fail(dec);
        if (ret < 0) {
            /* End of input, or a read failure after which nothing more can
             * come: drain the decoder either way (the CLI does the same). */
            if (ret != AVERROR_EOF && !(dec->fmt->pb && avio_feof(dec->fmt->pb))) {
                if (ret == AVERROR(EAGAIN))
                    continue;
                count_error(dec, ret, 0);
                if (dec->fmt->pb && dec->fmt->pb->error < 0 && ret != AVERROR_INVALIDDATA)
                    return dec_fail(dec, CLAPP_E_IO, "read error (%s)", av_errstr(ret, eb, sizeof(eb)));
            }
            dec->input_eof = 1;
            ret = avcodec_send_packet(dec->cc, NULL);
            if (ret < 0 && ret != AVERROR_EOF)
                count_error(dec, ret, 0);
            continue;
        }
        if (dec->pkt->stream_index != dec->st->index) {
            av_packet_unref(dec->pkt);
            continue;
        }
        {
            double secs = dec->pkt->duration > 0 ? (double)dec->pkt->duration * av_q2d(dec->st->time_base) : 0;
            if (secs > 0) {
                dec->pkt_seconds += secs;
                dec->n_pkts++;
            }
            ret = avcodec_send_packet(dec->cc, dec->pkt);
            av_packet_unref(dec->pkt);
            if (ret < 0 && ret != AVERROR(EAGAIN))
                count_error(dec, ret, secs);
        }
    }
}

/* ------------------------------------------------------------------------ */
/* Audio                                                                     */

static int fifo_reserve(clapp_decoder *dec, int64_t n)
{
    if (dec->fifo_len + n <= dec->fifo_cap)
        return 0;
    int64_t cap = dec->fifo_len + n;
    float  *f = realloc(dec->fifo, (size_t)cap * sizeof(float));
    if (!f)
        return dec_fail(dec, CLAPP_E_NOMEM, "out of memory");
    dec->fifo = f;
    dec->fifo_cap = cap;
    return 0;
}

/* Drain the resampler's delay line into the FIFO. */
static int swr_drain(clapp_decoder *dec)
{
    char eb[128];
    if (!dec->swr)
        return 0;
    for (;;) {
        int want = swr_get_out_samples(dec->swr, 0);
        if (want <= 0)
            want = 256;
        int ret = fifo_reserve(dec, want);
        if (ret < 0)
            return ret;
        uint8_t *o = (uint8_t *)(dec->fifo + dec->fifo_len);
        int      got = swr_convert(dec->swr, &o, want, NULL, 0);
        if (got < 0)
            return dec_fail(dec, CLAPP_E_INTERNAL, "resampler failed (%s)", av_errstr(got, eb, sizeof(eb)));
        if (got == 0)
            return 0;
        dec->fifo_len += got;
    }
}

/* (Re)configure the resampler for input of this layout/format/rate. */
static int swr_setup(clapp_decoder *dec, const AVChannelLayout *layout_in, int fmt, int rate)
{
    AVChannelLayout layout = { 0 };
    AVChannelLayout mono = AV_CHANNEL_LAYOUT_MONO;
    char            eb[128];
    int             ret;

    /* Unknown channel order: the CLI assumes the default layout for the count. */
    if (layout_in->order == AV_CHANNEL_ORDER_UNSPEC)
        av_channel_layout_default(&layout, layout_in->nb_channels);
    else if (av_channel_layout_copy(&layout, layout_in) < 0)
        return dec_fail(dec, CLAPP_E_NOMEM, "out of memory");

    if (dec->swr && dec->swr_fmt == fmt && dec->swr_rate == rate &&
        av_channel_layout_compare(&dec->swr_layout, &layout) == 0) {
        ret = 0;
        goto done;
    }
    if (dec->swr) { /* format change mid-stream: finish the old conversion */
        ret = swr_drain(dec);
        if (ret < 0)
            goto done;
        swr_free(&dec->swr);
    }
    ret = swr_alloc_set_opts2(&dec->swr, &mono, AV_SAMPLE_FMT_FLT, dec->p.rate, &layout, fmt, rate, 0, NULL);
    if (ret >= 0)
        ret = swr_init(dec->swr);
    if (ret < 0) {
        swr_free(&dec->swr);
        ret = dec_fail(dec, CLAPP_E_UNSUPPORTED, "cannot convert %d channels %s at %d Hz (%s)",
                       layout.nb_channels, av_get_sample_fmt_name(fmt) ? av_get_sample_fmt_name(fmt) : "?",
                       rate, av_errstr(ret, eb, sizeof(eb)));
        goto done;
    }
    av_channel_layout_uninit(&dec->swr_layout);
    ret = av_channel_layout_copy(&dec->swr_layout, &layout);
    if (ret < 0) {
        ret = dec_fail(dec, CLAPP_E_NOMEM, "out of memory");
        goto done;
    }
    dec->swr_fmt = fmt;
    dec->swr_rate = rate;
    ret = 0;
done:
    av_channel_layout_uninit(&layout);
    return ret;
}

static int swr_push(clapp_decoder *dec, const uint8_t **in, int n_in)
{
    char eb[128];
    int  want = swr_get_out_samples(dec->swr, n_in);
    if (want < 0)
        return dec_fail(dec, CLAPP_E_INTERNAL, "resampler failed (%s)", av_errstr(want, eb, sizeof(eb)));
    /* First frame: room for frames up to twice as long (or 8192), so codecs
     * with variable frame sizes do not grow the FIFO in the steady state. */
    int first = dec->fifo_cap == 0 ? swr_get_out_samples(dec->swr, n_in > 4096 ? 2 * n_in : 8192) : 0;
    int ret = fifo_reserve(dec, want > first ? want : first);
    if (ret < 0)
        return ret;
    uint8_t *o = (uint8_t *)(dec->fifo + dec->fifo_len);
    int      got = swr_convert(dec->swr, &o, want, in, n_in);
    if (got < 0)
        return dec_fail(dec, CLAPP_E_INTERNAL, "resampler failed (%s)", av_errstr(got, eb, sizeof(eb)));
    dec->fifo_len += got;
    return 0;
}

/* Refill the (empty) FIFO. Returns 0, or 1 at the end of the stream, or a CLAPP_E_*. */
static int audio_fill_ffmpeg(clapp_decoder *dec)
{
    int ret;
    while (dec->fifo_len == 0) {
        ret = ffmpeg_next_frame(dec);
        if (ret < 0)
            return ret;
        if (ret == 0) {
            ret = swr_drain(dec);
            if (ret < 0)
                return ret;
            return dec->fifo_len > 0 ? 0 : 1;
        }
        ret = swr_setup(dec, &dec->frame->ch_layout, dec->frame->format, dec->frame->sample_rate);
        if (ret >= 0)
            ret = swr_push(dec, (const uint8_t **)dec->frame->extended_data, dec->frame->nb_samples);
        av_frame_unref(dec->frame);
        if (ret < 0)
            return ret;
    }
    return 0;
}

static int audio_fill_sndfile(clapp_decoder *dec)
{
    int ret;
    while (dec->fifo_len == 0) {
        sf_count_t got = sf_readf_float(dec->sf, dec->sfbuf, SNDFILE_CHUNK);
        if (got <= 0) {
            if (sf_error(dec->sf) != SF_ERR_NO_ERROR && dec->n_decoded == 0)
                return dec_fail(dec, CLAPP_E_FORMAT, "truncated or corrupt data (libsndfile: %s)",
                                sf_strerror(dec->sf));
            ret = swr_drain(dec);
            if (ret < 0)
                return ret;
            return dec->fifo_len > 0 ? 0 : 1;
        }
        dec->n_decoded++;
        if (!dec->swr) {
            AVChannelLayout layout = { 0 };
            av_channel_layout_default(&layout, dec->sfinfo.channels);
            ret = swr_setup(dec, &layout, AV_SAMPLE_FMT_FLT, dec->sfinfo.samplerate);
            av_channel_layout_uninit(&layout);
            if (ret < 0)
                return ret;
        }
        const uint8_t *in = (const uint8_t *)dec->sfbuf;
        ret = swr_push(dec, &in, (int)got);
        if (ret < 0)
            return ret;
    }
    return 0;
}

static int64_t audio_read(clapp_decoder *dec, float *dst, int64_t max_frames)
{
    int64_t n = 0;
    while (n < max_frames) {
        if (dec->fifo_pos < dec->fifo_len) {
            int64_t take = dec->fifo_len - dec->fifo_pos;
            if (take > max_frames - n)
                take = max_frames - n;
            memcpy(dst + n, dec->fifo + dec->fifo_pos, (size_t)take * sizeof(float));
            dec->fifo_pos += take;
            n += take;
            continue;
        }
        dec->fifo_pos = dec->fifo_len = 0;
        int ret = dec->use_sndfile ? audio_fill_sndfile(dec) : audio_fill_ffmpeg(dec);
        if (ret < 0)
            return n > 0 ? n : ret; /* the error is sticky: reported by the next call */
        if (ret == 1) {
            dec->done = 1;
            break;
        }
    }
    return n;
}

/* ------------------------------------------------------------------------ */
/* Video                                                                     */

/* Next decoded frame into held[n_held] with its pts in the output time base;
 * at the end, the end-of-stream pts the CLI gives the fps filter. Returns 1,
 * 0 at the end, or a CLAPP_E_*. */
static int video_pull(clapp_decoder *dec)
{
    AVRational st_tb = dec->st->time_base;
    int        ret = ffmpeg_next_frame(dec);

    if (ret < 0)
        return ret;
    if (ret == 0) {
        /* ffmpeg.c: EOF at ist->pts = last pts + its duration, rounded back
         * to the stream time base, then into the filter's output time base. */
        int64_t eof = av_rescale_q_rnd(dec->cli_next_pts, AV_TIME_BASE_Q, st_tb,
                                       AV_ROUND_NEAR_INF | AV_ROUND_PASS_MINMAX);
        dec->eof_pts = av_rescale_q_rnd(eof, st_tb, dec->out_tb, AV_ROUND_NEAR_INF | AV_ROUND_PASS_MINMAX);
        dec->have_eof = 1;
        return 0;
    }

    AVFrame *f = dec->frame;
    int64_t  pts = f->best_effort_timestamp;
    int64_t  dur;
    if (pts != AV_NOPTS_VALUE) {
        pts += dec->ts_offset;
        dec->cli_pts = dec->cli_next_pts = av_rescale_q(pts, st_tb, AV_TIME_BASE_Q);
    }
    if (f->pkt_duration > 0) {
        dur = av_rescale_q(f->pkt_duration, st_tb, AV_TIME_BASE_Q);
    } else {
        AVRational fr = dec->cc->framerate.num > 0 ? dec->cc->framerate : dec->st->avg_frame_rate;
        dur = fr.num > 0 && fr.den > 0 ? av_rescale(AV_TIME_BASE, fr.den, fr.num) : 0;
    }
    if (dec->cli_next_pts != AV_NOPTS_VALUE)
        dec->cli_next_pts += dur;

    int k = dec->n_held++;
    dec->held_pts[k] = av_rescale_q_rnd(pts, st_tb, dec->out_tb, AV_ROUND_NEAR_INF | AV_ROUND_PASS_MINMAX);
    av_frame_move_ref(dec->held[k], f);
    return 1;
}

static void video_shift(clapp_decoder *dec)
{
    AVFrame *t = dec->held[0];
    av_frame_unref(t);
    dec->held[0] = dec->held[1];
    dec->held[1] = t;
    dec->held_pts[0] = dec->held_pts[1];
    dec->n_held--;
    dec->repeats = 0;
    dec->pic_valid = 0;
}

/* A libswscale context set up as vf_scale (FFmpeg 5.1) sets up its own. */
static int video_sws_setup(clapp_decoder *dec, const AVFrame *f)
{
    int dst_fmt = dec->p.channels == 1 ? AV_PIX_FMT_GRAY8 : AV_PIX_FMT_GBRP;
    int ret;

    if (dec->sws && dec->sws_w == f->width && dec->sws_h == f->height && dec->sws_fmt == f->format &&
        dec->sws_range == (int)f->color_range && dec->sws_space == (int)f->colorspace)
        return 0;
    sws_freeContext(dec->sws);
    dec->sws = sws_alloc_context();
    if (!dec->sws)
        return dec_fail(dec, CLAPP_E_NOMEM, "out of memory");
    av_opt_set_int(dec->sws, "srcw", f->width, 0);
    av_opt_set_int(dec->sws, "srch", f->height, 0);
    av_opt_set_int(dec->sws, "src_format", f->format, 0);
    av_opt_set_int(dec->sws, "dstw", dec->p.width, 0);
    av_opt_set_int(dec->sws, "dsth", dec->p.height, 0);
    av_opt_set_int(dec->sws, "dst_format", dst_fmt, 0);
    av_opt_set_int(dec->sws, "sws_flags", SWS_BICUBIC, 0); /* the CLI's default */
    /* vf_scale: MPEG-2 chroma siting for progressive yuv420p input. */
    if (f->format == AV_PIX_FMT_YUV420P)
        av_opt_set_int(dec->sws, "src_v_chr_pos", 128, 0);
    ret = sws_init_context(dec->sws, NULL, NULL);
    if (ret < 0) {
        sws_freeContext(dec->sws);
        dec->sws = NULL;
        return dec_fail(dec, CLAPP_E_UNSUPPORTED, "cannot scale %dx%d %s to %dx%d", f->width, f->height,
                        av_get_pix_fmt_name(f->format) ? av_get_pix_fmt_name(f->format) : "?",
                        dec->p.width, dec->p.height);
    }
    {
        /* vf_scale: colour matrix from the frame ("auto"), input range from
         * the frame when it is known. */
        int *inv_table, *table, in_full, out_full, bri, con, sat;
        if (sws_getColorspaceDetails(dec->sws, &inv_table, &in_full, &table, &out_full, &bri, &con, &sat) >= 0) {
            const int *coefs = sws_getCoefficients(f->colorspace);
            if (f->color_range != AVCOL_RANGE_UNSPECIFIED)
                in_full = f->color_range == AVCOL_RANGE_JPEG;
            sws_setColorspaceDetails(dec->sws, coefs, in_full, coefs, out_full, bri, con, sat);
        }
    }
    dec->sws_w = f->width;
    dec->sws_h = f->height;
    dec->sws_fmt = f->format;
    dec->sws_range = (int)f->color_range;
    dec->sws_space = (int)f->colorspace;
    return 0;
}

static int video_emit(clapp_decoder *dec, float *dst)
{
    const int64_t W = dec->p.width, H = dec->p.height;
    const float   s = 1.0f / 255.0f;

    if (!dec->pic_valid) {
        AVFrame *f = dec->held[0];
        int      ret = video_sws_setup(dec, f);
        if (ret < 0)
            return ret;
        ret = sws_scale(dec->sws, (const uint8_t *const *)f->data, f->linesize, 0, f->height, dec->pic,
                        dec->pic_ls);
        if (ret <= 0)
            return dec_fail(dec, CLAPP_E_INTERNAL, "scaling failed");
        dec->pic_valid = 1;
    }
    /* GBRP stores G, B, R; the output is planar R, G, B. */
    static const int plane_of[3] = { 2, 0, 1 };
    for (int c = 0; c < dec->p.channels; c++) {
        int      pl = dec->p.channels == 1 ? 0 : plane_of[c];
        float   *o = dst + (size_t)c * (size_t)(W * H);
        for (int64_t y = 0; y < H; y++) {
            const uint8_t *row = dec->pic[pl] + y * dec->pic_ls[pl];
            for (int64_t x = 0; x < W; x++)
                o[y * W + x] = (float)row[x] * s;
        }
    }
    return 0;
}


/* One output frame by the fps filter's rule. Returns 1, 0 at the end, or a CLAPP_E_*. */
static int video_step(clapp_decoder *dec, float *dst)
{
    int ret;
    for (;;) {
        if (dec->n_held < 2 && !dec->have_eof) {
            ret = video_pull(dec);
            if (ret < 0)
                return ret;
            continue;
        }
        if (dec->n_held == 0)
            return 0;
        if (dec->next_pts == AV_NOPTS_VALUE) {
            if (dec->held_pts[0] == AV_NOPTS_VALUE) { /* as fps: frames without pts before the first are dropped */
                video_shift(dec);
                continue;
            }
            dec->next_pts = dec->held_pts[0];
        }
        if ((dec->n_held == 2 && dec->held_pts[1] <= dec->next_pts) ||
            (dec->have_eof && dec->eof_pts <= dec->next_pts)) {
            video_shift(dec);
            continue;
        }
        /* Bounded output: one input frame fills at most VIDEO_MAX_FRAME_SECONDS
         * of output (timestamps far apart would otherwise repeat a frame for
         * years), and the file at most twice what its container declares
         * plus a minute. */
        if (dec->repeats >= (int64_t)(dec->p.fps * VIDEO_MAX_FRAME_SECONDS) + 1)
            return dec_fail(dec, CLAPP_E_FORMAT, "a frame at %.3f s of output would last more than %d s "
                            "(implausible frame rate %d/%d or timestamps in the file)",
                            (double)dec->next_pts / dec->p.fps, VIDEO_MAX_FRAME_SECONDS, dec->st->avg_frame_rate.num,
                            dec->st->avg_frame_rate.den);
        if (dec->video_max >= 0 && dec->video_out >= dec->video_max)
            return dec_fail(dec, CLAPP_E_FORMAT, "%.0f s of output, more than %d x the %.3f s the container "
                            "declares plus %d s (implausible timestamps in the file)",
                            (double)dec->video_out / dec->p.fps, VIDEO_DECLARED_FACTOR, dec->declared_seconds,
                            VIDEO_DECLARED_SLACK);
        ret = video_emit(dec, dst);
        if (ret < 0)
            return ret;
        dec->video_out++;
        dec->repeats++;
        dec->next_pts++;
        return 1;
    }
}

static int64_t video_read(clapp_decoder *dec, float *dst, int64_t max_frames)
{
    const size_t fsize = (size_t)dec->p.channels * (size_t)dec->p.width * (size_t)dec->p.height;
    int64_t      n = 0;
    while (n < max_frames) {
        int ret = video_step(dec, dst + (size_t)n * fsize);
        if (ret < 0)
            return n > 0 ? n : ret;
        if (ret == 0) {
            dec->done = 1;
            break;
        }
        n++;
    }
    return n;
}

/* ------------------------------------------------------------------------ */
/* Public calls                                                              */

int64_t clapp_decoder_read(clapp_decoder *dec, float *dst, int64_t max_frames, char *err, size_t errlen)
{
    int64_t n;
    if (!dec || (!dst && max_frames > 0) || max_frames < 0) {
        clapp_set_err(err, errlen, "decode: bad read arguments");
        return CLAPP_E_INVAL;
    }
    if (dec->err_code < 0) {
        clapp_set_err(err, errlen, "%s", dec->err_msg);
        return dec->err_code;
    }
    if (dec->done || max_frames == 0)
        return 0;
    n = dec->p.kind == CLAPP_MEDIA_VIDEO ? video_read(dec, dst, max_frames) : audio_read(dec, dst, max_frames);
    if (n > 0) {
        dec->n_out += n;
        return n;
    }
    if (n < 0) {
        clapp_set_err(err, errlen, "%s", dec->err_msg);
        return n;
    }
    /* The end: a stream of which nothing could be decoded is an error. */
    if (dec->n_out == 0) {
        if (dec->n_decoded > 0)
            dec_fail(dec, CLAPP_E_FORMAT, "too short: %" PRId64 " decoded frame(s) give no output at the requested %s",
                     dec->n_decoded, dec->p.kind == CLAPP_MEDIA_VIDEO ? "frame rate" : "sample rate");
        else if (dec->n_errors > 0)
            dec_fail(dec, CLAPP_E_FORMAT, "truncated or corrupt data, nothing decoded (%" PRId64 " errors, last: %s)",
                     dec->n_errors, dec->last_error);
        else
            dec_fail(dec, CLAPP_E_FORMAT, "truncated or corrupt data, no %s decoded",
                     dec->p.kind == CLAPP_MEDIA_VIDEO ? "video frame" : "audio");
        clapp_set_err(err, errlen, "%s", dec->err_msg);
        return dec->err_code;
    }
    return 0;
}

int clapp_decoder_input_rate(const clapp_decoder *dec)
{
    if (!dec || dec->p.kind != CLAPP_MEDIA_AUDIO)
        return 0;
    if (dec->use_sndfile)
        return dec->sfinfo.samplerate;
    return dec->cc ? dec->cc->sample_rate : 0;
}

int64_t clapp_decoder_duration_frames(const clapp_decoder *dec)
{
    double seconds, frames;
    if (!dec)
        return -1;
    if (dec->use_sndfile) {
        if (dec->sfinfo.frames <= 0 || dec->sfinfo.frames == SF_COUNT_MAX || !dec->sfinfo.seekable)
            return -1;
        seconds = (double)dec->sfinfo.frames / dec->sfinfo.samplerate;
    } else {
        /* Streams that cannot seek (pipes, network) are live: length unknown. */
        if (!dec->fmt || !dec->fmt->pb || !(dec->fmt->pb->seekable & AVIO_SEEKABLE_NORMAL))
            return -1;
        if (dec->st && dec->st->duration != AV_NOPTS_VALUE && dec->st->duration > 0)
            seconds = (double)dec->st->duration * av_q2d(dec->st->time_base);
        else if (dec->fmt->duration != AV_NOPTS_VALUE && dec->fmt->duration > 0)
            seconds = (double)dec->fmt->duration / AV_TIME_BASE;
        else
            return -1;
    }
    frames = seconds * (dec->p.kind == CLAPP_MEDIA_VIDEO ? av_q2d(av_inv_q(dec->out_tb)) : dec->p.rate) + 0.5;
    /* A header may claim anything: past 2^62 frames the length is unknown,
     * not an integer overflow. */
    return frames < 4.6e18 ? (int64_t)frames : -1;
}

int64_t clapp_decoder_error_count(const clapp_decoder *dec)
{
    return dec ? dec->n_errors : 0;
}

double clapp_decoder_lost_seconds(const clapp_decoder *dec)
{
    return dec ? dec->lost_seconds : 0;
}

double clapp_decoder_declared_seconds(const clapp_decoder *dec, int *exact)
{
    if (exact)
        *exact = dec ? dec->declared_exact : 0;
    return dec ? dec->declared_seconds : -1;
}

void clapp_decoder_close(clapp_decoder *dec)
{
    if (!dec)
        return;
    close_backends(dec);
    av_packet_free(&dec->pkt);
    av_frame_free(&dec->frame);
    for (int i = 0; i < 2; i++)
        av_frame_free(&dec->held[i]);
    swr_free(&dec->swr);
    av_channel_layout_uninit(&dec->swr_layout);
    sws_freeContext(dec->sws);
    av_freep(&dec->pic[0]);
    free(dec->fifo);
    free(dec->sfbuf);
    free(dec->name);
    free(dec);
}
