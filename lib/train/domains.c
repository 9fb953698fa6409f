/* domains: the held-out and source domains of a run; see domains.h. */
#include "train/domains.h"

#include "util.h"

#include <stdlib.h>
#include <string.h>

int train_split_ok(const char *want, const char *split)
{
    return strcmp(want, "all") == 0 || !split || strcmp(split, want) == 0;
}

int train_domains_held_out(const train_domains *d, const char *dom)
{
    for (int k = 0; k < d->ntest; k++)
        if (strcmp(dom, d->test[k]) == 0) return 1;
    return 0;
}

int train_domains_find(const train_domains *d, const char *dom)
{
    for (int k = 0; k < d->n; k++)
        if (strcmp(d->name[k], dom) == 0) return k;
    return -1;
}

void train_domains_add(train_domains *d, const char *dom)
{
    if (train_domains_find(d, dom) >= 0) return;
    d->name = xrealloc(d->name, (size_t)(d->n + 1) * sizeof *d->name);
    d->name[d->n++] = xstrdup(dom);
}

void train_domains_sort(train_domains *d)
{
    for (int a = 1; a < d->n; a++)
        for (int b = a; b > 0 && strcmp(d->name[b - 1], d->name[b]) > 0; b--) {
            char *t = d->name[b];
            d->name[b] = d->name[b - 1], d->name[b - 1] = t;
        }
}

void train_domains_free(train_domains *d)
{
    for (int k = 0; k < d->n; k++) free(d->name[k]);
    free(d->name);
    d->name = NULL, d->n = 0;
}
