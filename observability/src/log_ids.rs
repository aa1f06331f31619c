//! Puts the current trace and span ids on every log line written inside a
//! traced span, so a log line leads to its trace and back.
//!
//! The ids come from the OpenTelemetry context that the tracing layer
//! makes current while a span is entered; outside traced spans (or with
//! no collector configured) lines are left as they are.
use std::fmt;

use opentelemetry::trace::TraceContextExt;
use tracing::{Event, Subscriber};
use tracing_subscriber::{
    fmt::{FmtContext, FormatEvent, FormatFields, format::Writer},
    registry::LookupSpan,
};

/// Wraps an event format: JSON lines gain `trace_id` and `span_id` keys,
/// text lines gain `trace_id=… span_id=…` at their end.
pub(crate) struct WithTraceIds<F> {
    pub inner: F,
    pub json: bool,
}

impl<S, N, F> FormatEvent<S, N> for WithTraceIds<F>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
    F: FormatEvent<S, N>,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let cx = opentelemetry::Context::current();
        let span = cx.span();
        let ids = span.span_context();
        if !ids.is_valid() {
            return self.inner.format_event(ctx, writer, event);
        }
        let mut line = String::new();
        self.inner
            .format_event(ctx, Writer::new(&mut line), event)?;
        let (trace, span) = (ids.trace_id(), ids.span_id());
        if self.json
            && let Some(rest) = line.strip_prefix('{')
        {
            write!(
                writer,
                "{{\"trace_id\":\"{trace}\",\"span_id\":\"{span}\",{rest}"
            )
        } else {
            let body = line.strip_suffix('\n').unwrap_or(&line);
            writeln!(writer, "{body} trace_id={trace} span_id={span}")
        }
    }
}
