/* domains: which items a leave-one-domain-out run learns from. An item of a
 * held-out (test) domain is never seen, neither for training nor for model
 * selection; an item passes a split filter when its split is the one wanted,
 * when the filter is "all", or when it has no split. The source domains are
 * the training items' domains, numbered in name order once all are added, so
 * that a run's batches and its validation average do not depend on the
 * input's order. align-fit and distill-train choose their items this way. */
#ifndef VL_TRAIN_DOMAINS_H
#define VL_TRAIN_DOMAINS_H

typedef struct {
    char *const *test; /* the held-out domains (not owned) */
    int ntest;
    char **name; /* the source domains, owned */
    int n;
} train_domains;

/* Whether split passes the filter want ("all": every item; NULL split: yes). */
int train_split_ok(const char *want, const char *split);
/* Whether dom is one of the held-out domains. */
int train_domains_held_out(const train_domains *d, const char *dom);
/* Adds a source domain (a copy) unless it is there already. */
void train_domains_add(train_domains *d, const char *dom);
/* Numbers the source domains in name order (bytewise). */
void train_domains_sort(train_domains *d);
/* The number of a source domain, or -1. */
int train_domains_find(const train_domains *d, const char *dom);
void train_domains_free(train_domains *d);

#endif
