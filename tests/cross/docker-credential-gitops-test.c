/*
 * Test infrastructure only: a Docker credential helper for Windows
 * (docker-credential-gitops-test.exe). `get` reads the server address on
 * stdin and answers with the user and secret of GITOPS_TEST_HELPER_USER and
 * GITOPS_TEST_HELPER_SECRET, as Docker's credential helper protocol says.
 * It also writes the address it was asked for to GITOPS_TEST_HELPER_LOG, so
 * the test can tell the helper really ran.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int main(int argc, char **argv)
{
    char server[1024] = {0};
    const char *user = getenv("GITOPS_TEST_HELPER_USER");
    const char *secret = getenv("GITOPS_TEST_HELPER_SECRET");
    const char *log = getenv("GITOPS_TEST_HELPER_LOG");
    if (argc != 2 || strcmp(argv[1], "get") != 0 || !user || !secret) {
        fprintf(stderr, "usage: GITOPS_TEST_HELPER_USER=U GITOPS_TEST_HELPER_SECRET=S %s get\n", argv[0]);
        return 2;
    }
    if (!fgets(server, sizeof server, stdin))
        return 1;
    server[strcspn(server, "\r\n")] = 0;
    if (log) {
        FILE *f = fopen(log, "a");
        if (f) {
            fprintf(f, "%s\n", server);
            fclose(f);
        }
    }
    printf("{\"ServerURL\":\"%s\",\"Username\":\"%s\",\"Secret\":\"%s\"}\n", server, user, secret);
    return 0;
}
