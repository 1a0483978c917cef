/* clapp — command-line entry: dispatch to the subcommands. */
#include <stdio.h>
#include <string.h>

#include "cli.h"
#include "dist.h"

#ifndef CLAPP_VERSION_STRING
#define CLAPP_VERSION_STRING "unknown"
#endif

static void usage(FILE *f)
{
    fprintf(f,
            "usage: clapp COMMAND [ARGS]\n"
            "\n"
            "commands:\n"
            "  inspect [ELEMENT]            list elements, or one element's parameters\n"
            "  run PIPE --data MANIFEST     run a pipeline over the files of a manifest (no learning)\n"
            "  run PIPE --dump-graph        print the resolved pipeline with every default\n"
            "  train PIPE --data MANIFEST   learn online over the manifest (JSONL metrics)\n"
            "  eval PIPE --checkpoint C --train M --test M\n"
            "                               train the probes on a frozen encoder, report test accuracy\n"
            "  extract PIPE --checkpoint C --data MANIFEST --out DIR [--element NAME]...\n"
            "                               write features (.npy + .json sidecar) per file and element\n"
            "  validate PLUGIN.so           check a plugin against the ABI (lifecycle, seed, gradients)\n"
            "\n"
            "'clapp COMMAND --help' describes a command. train and extract also run data parallel\n"
            "under mpirun -np N.\n");
}

static int dispatch(int argc, char **argv)
{
    if (argc < 2) {
        usage(stderr);
        return CLI_USAGE;
    }
    if (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h") || !strcmp(argv[1], "help")) {
        usage(stdout);
        return CLI_OK;
    }
    if (!strcmp(argv[1], "--version")) {
        printf("clapp %s (plugin ABI %d.%d)\n", CLAPP_VERSION_STRING, CLAPP_ABI_MAJOR, CLAPP_ABI_MINOR);
        return CLI_OK;
    }
    if (!strcmp(argv[1], "inspect"))
        return cli_inspect(argc - 1, argv + 1);
    if (!strcmp(argv[1], "run"))
        return cli_run(argc - 1, argv + 1);
    if (!strcmp(argv[1], "train"))
        return cli_train(argc - 1, argv + 1);
    if (!strcmp(argv[1], "eval"))
        return cli_eval(argc - 1, argv + 1);
    if (!strcmp(argv[1], "extract"))
        return cli_extract(argc - 1, argv + 1);
    if (!strcmp(argv[1], "validate"))
        return cli_validate(argc - 1, argv + 1);
    fprintf(stderr, "clapp: unknown command '%s'\n", argv[1]);
    usage(stderr);
    return CLI_USAGE;
}

int main(int argc, char **argv)
{
    cli_dist d;
    int status = cli_dist_start(&argc, &argv);
    if (status != CLI_OK)
        return status;
    cli_dist_init(&d);
    /* Under mpirun: train and extract share the work; anything else would
     * only run N times over. */
    if (d.ranks > 1 && (argc < 2 || (strcmp(argv[1], "train") && strcmp(argv[1], "extract")))) {
        if (d.rank == 0)
            fprintf(stderr, "clapp: error: %s runs in one process; of the commands, train and extract run "
                    "on several ranks (mpirun)\n", argc < 2 ? "clapp" : argv[1]);
        status = CLI_USAGE;
    } else {
        status = dispatch(argc, argv);
    }
    cli_dist_stop();
    return status;
}
