/* clapp run PIPE --data MANIFEST: stream the files through the pipeline,
 * learning off; or --dump-graph: print the resolved pipeline. */
#include <stdio.h>
#include <stdlib.h>

#include "stream.h"

static void run_usage(void)
{
    printf("usage: clapp run PIPE --data MANIFEST [--set NAME.KEY=VALUE]... [--epochs N] [--seed S] [--strict]\n"
           "                 [-q|-v]\n"
           "       clapp run PIPE --dump-graph [--set NAME.KEY=VALUE]...\n"
           "Runs the pipeline over every file of the manifest with learning off (sinks such as\n"
           "'features' see the stream). Damaged input (packets the decoder had to skip, a file cut\n"
           "short of the length its header declares) is a warning naming the file and the seconds\n"
           "lost or missing, and what could be decoded is used; --strict makes it an error (the file\n"
           "fails). Exit status: 0 all files processed; 1 some files could not be read or the run\n"
           "failed; 2 bad command line, pipeline text or manifest; 130/143 stopped by SIGINT/SIGTERM.\n");
}

int cli_run(int argc, char **argv)
{
    cli_options o;
    int help = 0, status;

    status = cli_options_parse(&o, argc, argv, &help);
    if (status == CLI_OK && help)
        run_usage();
    else if (status == CLI_OK)
        status = cli_stream(&o, 0);
    cli_options_free(&o);
    return status;
}
