-- W3C trace context of what caused each access event (the consumed record's ce_traceparent
-- with a new span id, or the prefill request's); the relay sends it as ce_traceparent.
ALTER TABLE access_outbox ADD COLUMN traceparent text, ADD COLUMN tracestate text;
