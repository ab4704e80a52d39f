-- W3C trace context of the request that caused each outbox row; the relay sends it as the
-- CloudEvents distributed-tracing extension (ce_traceparent, ce_tracestate headers).
-- Plain text columns so that the bulk path's binary COPY can write them.
ALTER TABLE outbox ADD COLUMN traceparent text, ADD COLUMN tracestate text;
