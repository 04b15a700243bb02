//! `weir stats --format prometheus` (one scrape, printed) and `weir
//! stats --serve ADDR` (a scrape per `GET /metrics`): both read the back
//! end through [`crate::metrics::read`] and write it with the one
//! renderer, [`crate::metrics::render`].

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use crate::metrics::read::Source;
use crate::metrics::serve::{self, Handler, Response};
use crate::metrics::{self, text::CONTENT_TYPE, Tally};
use crate::target::Target;

/// One scrape, printed; exit 2 when a source could not be read (the
/// text still says which, in `weir_scrape_error`).
pub fn once(target: &Target) -> i32 {
    let source = match Source::of(target) {
        Ok(s) => s,
        Err(c) => return c,
    };
    let scrape = source.read();
    let mut tally = Tally::new();
    scrape.count_errors(&mut tally);
    crate::out!("{}", metrics::render(&scrape, &tally));
    for (src, e) in &scrape.errors {
        crate::errln!("error: reading {src}: {e}");
    }
    i32::from(!scrape.errors.is_empty()) * 2
}

/// Scrapes are read one at a time (the runtime takes the instance's
/// lock anyway); the error tally lives as long as the server, and the
/// last errors are kept to log each only when it appears or changes.
struct Stats {
    state: Mutex<(Source, Tally, BTreeMap<&'static str, String>)>,
}

impl Handler for Stats {
    fn answer(&self, path: &str) -> Option<Response> {
        if path != "/metrics" {
            return None;
        }
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let (source, tally, last) = &mut *st;
        let scrape = source.read();
        scrape.count_errors(tally);
        for (src, e) in &scrape.errors {
            if last.get(src) != Some(e) {
                crate::errln!("weir stats: reading {src}: {e}");
            }
        }
        *last = scrape.errors.clone();
        Some(Response::new(
            200,
            CONTENT_TYPE,
            metrics::render(&scrape, tally),
        ))
    }

    fn paths(&self) -> &'static str {
        "/metrics"
    }
}

/// Serves `/metrics` on `addr` until killed.
pub fn serve(target: &Target, addr: &str) -> i32 {
    let source = match Source::of(target) {
        Ok(s) => s,
        Err(c) => return c,
    };
    let handler = Arc::new(Stats {
        state: Mutex::new((source, Tally::new(), BTreeMap::new())),
    });
    match serve::serve(addr, "weir-stats-http", handler) {
        Ok(a) => crate::errln!("weir stats: serving http://{a}/metrics"),
        Err(e) => return crate::program::usage(format_args!("cannot listen on {addr}: {e}")),
    }
    loop {
        std::thread::park();
    }
}
