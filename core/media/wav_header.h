/* clapp core — what a WAV file's header declares: the length of its PCM
 * data, from the 'data' chunk's size field and the 'fmt ' chunk. FFmpeg
 * drops that size when the file is shorter than it says (a cut file), and
 * estimates the length from the file size instead; this reads the size
 * itself so that a cut WAV can be reported as such. */
#ifndef CLAPP_CORE_WAV_HEADER_H
#define CLAPP_CORE_WAV_HEADER_H

/* Seconds of audio the header of WAV file `path` declares, or -1 when it
 * declares none that can be trusted: not RIFF/WAVE, a 'data' size of 0 or
 * 0xFFFFFFFF (a writer that never came back to fill it in), RF64, or a
 * codec whose blocks hold more than one sample frame (ADPCM and the like:
 * only PCM, IEEE float, A-law, mu-law and their WAVE_FORMAT_EXTENSIBLE
 * forms count). Reads at most 64 chunk headers. */
double clapp_wav_declared_seconds(const char *path);

#endif
