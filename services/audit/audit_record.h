/* audit_record.h - one AuditEvent as the JSON members of its audit log record (the
 * <fields> of common/audit_log.h's line format). Fixed member order, strings escaped by
 * common/json_writer, so the same event always gives the same bytes. A payload that
 * is not an AuditEvent still becomes a record (what arrived is never dropped).
 */
#ifndef CITADEL_AUDIT_RECORD_H
#define CITADEL_AUDIT_RECORD_H

#include <stddef.h>

#include "citadel.pb-c.h"

/* The members for event e, malloc'd (free with free()) with their length in *len.
 * Returns NULL when out of memory. */
char *audit_record_fields(const Citadel__AuditEvent *e, size_t *len);

/* The members for a payload that did not decode: its size and SHA-256, and when it was
 * received (unix ms). NULL when out of memory. */
char *audit_record_undecodable(const void *payload, size_t n, long long received_ms, size_t *len);

#endif
