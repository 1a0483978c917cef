/* clapp core — media decoders: one file or URL in, float frames out.
 *
 * Audio: mono float32 samples at the requested rate, equal to what
 * `ffmpeg -i IN -ac 1 -ar RATE -f f32le` writes (same sample count; encoder
 * delay/padding dropped as the CLI does; stereo downmix (L + R) / sqrt(2),
 * libswresample's default matrix). The libsndfile backend (SNDFILE, or AUTO
 * when FFmpeg cannot open a file) feeds its samples through the same
 * libswresample conversion, so both backends agree on wav/flac.
 * Video: frames of C*H*W float32 in [0, 1] (C = 1 gray, 3 RGB, planar,
 * row-major), equal to `ffmpeg -i IN -vf fps=F,scale=W:H,format=gray`
 * (format=gbrp for RGB): frames dropped/duplicated on pts by the fps filter's
 * rule, scaled bicubic with libswscale. (Damaged video decoded by the CLI
 * with several threads may be concealed differently; with -threads 1 it
 * matches.)
 *
 * Memory is bounded by one decoded frame plus the caller's buffer; nothing
 * is buffered ahead and nothing is ever seeked (pipes and live URLs work).
 *
 * Errors: every call that can fail fills `err` with one line that names the
 * file and the cause, e.g. "a.mp3: truncated or corrupt data (Invalid data
 * found when processing input)".
 */
#ifndef CLAPP_CORE_DECODE_H
#define CLAPP_CORE_DECODE_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

typedef enum clapp_media_kind { CLAPP_MEDIA_AUDIO = 0, CLAPP_MEDIA_VIDEO = 1 } clapp_media_kind;

typedef enum clapp_decode_backend {
    CLAPP_DECODE_AUTO = 0,    /* FFmpeg for everything (sndfile only if FFmpeg cannot open it) */
    CLAPP_DECODE_FFMPEG = 1,
    CLAPP_DECODE_SNDFILE = 2, /* audio only */
} clapp_decode_backend;

typedef struct clapp_decode_params {
    clapp_media_kind     kind;
    clapp_decode_backend backend;
    int                  rate;      /* audio: output sample rate (Hz) */
    int                  width;     /* video: output size */
    int                  height;
    double               fps;       /* video: output frame rate */
    int                  channels;  /* video: 1 gray, 3 RGB */
    double               io_timeout; /* seconds an open or read may wait for data; 0: no limit */
    const atomic_int    *stop;      /* when nonzero, blocking opens and reads give up; may be NULL */
    int                (*interrupt)(void *user); /* the host's: nonzero, waits for data (FIFOs,
                                                  * URLs, standard input; not regular files, whose
                                                  * reads never wait) give up too ("interrupted
                                                  * while waiting for data"); may be NULL */
    void                *interrupt_user;
} clapp_decode_params;

typedef struct clapp_decoder clapp_decoder;

/* Open `url` (a path, "-" for standard input, or any URL FFmpeg opens).
 * Returns 0 or a negative CLAPP_E_*. */
int clapp_decoder_open(clapp_decoder **dec, const char *url, const clapp_decode_params *p,
                       char *err, size_t errlen);

/* The same from `size` bytes in memory (borrowed: they must outlive the
 * decoder), read through a seekable AVIOContext; `name` is what messages
 * call it. The FFmpeg backend only (AUTO is FFmpeg; SNDFILE:
 * CLAPP_E_UNSUPPORTED). What the fuzz target tests/fuzz/fuzz_decode.c
 * decodes. */
int clapp_decoder_open_memory(clapp_decoder **dec, const char *name, const void *data, size_t size,
                              const clapp_decode_params *p, char *err, size_t errlen);

/* Read up to max_frames frames into dst (audio: samples; video: frames of
 * channels*height*width floats each). Returns the number read (> 0), 0 at
 * the end of the stream, or a negative CLAPP_E_* (err filled). After an
 * error the decoder returns the same error again. */
int64_t clapp_decoder_read(clapp_decoder *dec, float *dst, int64_t max_frames, char *err,
                           size_t errlen);

/* Native sample rate of the input audio (for .phn alignments in samples of
 * the original file); 0 if unknown or video. */
int clapp_decoder_input_rate(const clapp_decoder *dec);

/* Duration estimate in output frames, or -1 for live streams / unknown
 * (anything that cannot seek: pipes, standard input, network streams). */
int64_t clapp_decoder_duration_frames(const clapp_decoder *dec);

/* Decoding errors skipped so far (damaged packets the decoder rejected, as
 * the ffmpeg CLI skips them). A stream of which nothing at all could be
 * decoded ends with CLAPP_E_FORMAT instead of 0 ("truncated or corrupt
 * data, nothing decoded (...)"). A truncated file delivers its decodable
 * prefix, then 0. */
int64_t clapp_decoder_error_count(const clapp_decoder *dec);
/* About how much media those damaged packets held, in seconds (their
 * durations; a failure not tied to one packet counts the mean packet). */
double  clapp_decoder_lost_seconds(const clapp_decoder *dec);

/* Seconds of media the input's header declares, or -1 if it declares none
 * that can be trusted: a WAV file's data size (FFmpeg drops it for a file
 * shorter than it says), else the container's duration when read from its
 * header (not one estimated from the bit rate and the file size, and none
 * for live inputs). *exact (may be NULL) is 1 for a WAV size field (a
 * shortfall of milliseconds is real), 0 for a container duration (a few
 * frames off is normal). */
double  clapp_decoder_declared_seconds(const clapp_decoder *dec, int *exact);

void clapp_decoder_close(clapp_decoder *dec);

#endif
