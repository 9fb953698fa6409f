/* workspace: see workspace.h. */
#include "workspace.h"

#include "util.h"

#include <stdlib.h>

static _Thread_local float *ws;
static _Thread_local size_t ws_cap;

float *nn_workspace(size_t n)
{
    if (n > ws_cap) {
        free(ws);
        ws = xmalloc_aligned(n * sizeof(float));
        ws_cap = n;
    }
    return ws;
}

void nn_workspace_release(void)
{
    free(ws);
    ws = NULL;
    ws_cap = 0;
}
