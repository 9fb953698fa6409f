/* version: the one version of the vl2v programs, printed by every tool's
 * --version and recorded in each stream's header (history_versions, see
 * vl2v-stream(5)) beside the argv of the program that wrote it. */
#ifndef VL_VERSION_H
#define VL_VERSION_H

#define VL2V_VERSION "0.1.0"

#endif
