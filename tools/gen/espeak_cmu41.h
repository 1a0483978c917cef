/* espeak_cmu41.h — espeak-ng's English phoneme names mapped to the 41 phone
 * classes of flite and the probes (the 39 CMU phones, ax, pau; see
 * clapp_labelset_init_cmu41). Included by make_speech_corpus.c only.
 *
 * The names are espeak-ng's own mnemonics as its phoneme events report them
 * (espeakINITIALIZE_PHONEME_EVENTS without the IPA option), for the English
 * accents the generator offers. The table was checked against the events of
 * 400 fortune sentences per accent (en-us, en-gb, en-gb-scotland, en-gb-x-rp,
 * en-gb-x-gbclan, en-gb-x-gbcwmd, en-029, en-us-nyc; espeak-ng 1.51): every
 * name seen there is listed. A name missing from the table makes the
 * generator skip that item with a warning, so a new accent or espeak release
 * shows what to add.
 *
 * The class is the one a CMU dictionary transcription of the same word would
 * give, because that is what flite's labels are: the labels of the two
 * synthesisers then mean the same thing. Choices worth knowing:
 *   - r-coloured vowels (A@ O@ o@ e@ i@ i@3 U@, rhotic in en-us, long vowels
 *     or diphthongs in en-gb) are one event in espeak; they take the class of
 *     their vowel (car: aa, north/four: ao, square: eh, near: ih, cure: uh);
 *     an r that espeak emits separately keeps its own label. 3: 3 VR IR
 *     (nurse, letter, Scottish "further", "bird") are er.
 *   - reduced vowels @ @2 @- @5 a# are ax (flite's unstressed schwa); V is ah.
 *   - en-us flap t# and t2, the glottal stop ? (as in "button") and en-029's
 *     dental t[ (its "th") are t; the syllabic @L n- are l n.
 *   - O2 is en-us's vowel of "on", "costs": aa, as CMU mostly writes it.
 *   - ";" is a short glide espeak puts between two vowels ("biology"); it is
 *     no phone of its own in CMU, so it gets no boundary: its samples stay
 *     with the phone before it (class NULL below).
 *   - pauses _: _ _! _| are pau.
 */
#ifndef CLAPP_ESPEAK_CMU41_H
#define CLAPP_ESPEAK_CMU41_H

#include <string.h>

typedef struct sc_espeak_phone {
    const char *espeak;   /* espeak-ng mnemonic */
    const char *cmu;      /* class name in the 41 set; NULL: merge into the previous phone */
} sc_espeak_phone;

static const sc_espeak_phone sc_espeak_cmu41[] = {
    /* pauses */
    {"_:", "pau"}, {"_", "pau"}, {"_!", "pau"}, {"_|", "pau"},
    /* vowels */
    {"a", "ae"}, {"aa", "ae"}, {"a#", "ax"},
    {"A:", "aa"}, {"A@", "aa"}, {"0", "aa"}, {"O2", "aa"},
    {"O:", "ao"}, {"O", "ao"}, {"O@", "ao"}, {"o@", "ao"},
    {"aI", "ay"}, {"aI2", "ay"}, {"aI3", "ay"}, {"aI@", "ay"},
    {"aU", "aw"},
    {"E", "eh"}, {"e", "eh"}, {"e@", "eh"},
    {"eI", "ey"},
    {"3:", "er"}, {"3", "er"}, {"VR", "er"}, {"IR", "er"},
    {"I", "ih"}, {"I2", "ih"}, {"I#", "ih"}, {"i@", "ih"}, {"i@3", "ih"},
    {"i", "iy"}, {"i:", "iy"},
    {"o", "ow"}, {"oU", "ow"},
    {"OI", "oy"},
    {"U", "uh"}, {"U@", "uh"},
    {"u:", "uw"},
    {"V", "ah"},
    {"@", "ax"}, {"@2", "ax"}, {"@-", "ax"}, {"@5", "ax"},
    /* consonants */
    {"b", "b"}, {"d", "d"}, {"D", "dh"}, {"dZ", "jh"}, {"f", "f"}, {"g", "g"}, {"h", "hh"},
    {"j", "y"}, {"k", "k"}, {"x", "k"}, {"l", "l"}, {"@L", "l"}, {"m", "m"}, {"n", "n"},
    {"n-", "n"}, {"N", "ng"}, {"p", "p"}, {"r", "r"}, {"r-", "r"}, {"s", "s"}, {"S", "sh"},
    {"t", "t"}, {"t#", "t"}, {"t2", "t"}, {"t[", "t"}, {"?", "t"}, {"T", "th"}, {"tS", "ch"},
    {"v", "v"}, {"w", "w"}, {"w#", "w"}, {"z", "z"}, {"Z", "zh"},
    /* glide between vowels: no boundary */
    {";", NULL},
};

/* The entry for an espeak mnemonic, or NULL if it is not in the table. */
static const sc_espeak_phone *sc_espeak_phone_find(const char *name)
{
    for (size_t i = 0; i < sizeof sc_espeak_cmu41 / sizeof sc_espeak_cmu41[0]; i++)
        if (strcmp(sc_espeak_cmu41[i].espeak, name) == 0)
            return &sc_espeak_cmu41[i];
    return NULL;
}

#endif
