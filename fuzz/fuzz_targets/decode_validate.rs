//! Fuzz decode + validate + enrich: arbitrary bytes as the body of a batch route and of
//! every single-call route must never panic, hang or blow the stack, and ferry-wire's
//! scanner must accept exactly the JSON serde_json accepts.

#![no_main]

use ferry_event::{CallType, Ctx, Limits, Route};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let limits = Limits::default();
    let routes = [
        Route::Batch,
        Route::Single(CallType::Track),
        Route::Single(CallType::Identify),
        Route::Single(CallType::Page),
        Route::Single(CallType::Screen),
        Route::Single(CallType::Group),
        Route::Single(CallType::Alias),
    ];
    // The first byte picks the route, so the corpus explores all of them.
    let (route, body) = match data.split_first() {
        Some((first, rest)) => (routes[usize::from(*first) % routes.len()], rest),
        None => (Route::Batch, data),
    };
    // The scanner takes exactly what serde_json takes (below serde_json's own recursion
    // limit of 128).
    if let Ok(text) = std::str::from_utf8(body) {
        let mut scanner = ferry_wire::Scanner::new(text, 100);
        let scanned = scanner.value().and_then(|_| scanner.finish());
        if scanned != Err(ferry_wire::ScanError::TooDeep) {
            let serde = serde_json::from_str::<serde::de::IgnoredAny>(text).is_ok();
            assert_eq!(scanned.is_ok(), serde, "scanner and serde_json disagree: {scanned:?}");
        }
    }
    let Ok(parsed) = ferry_event::parse(body, route, &limits) else { return };
    let _ = parsed.write_key();
    let mut n = 0u64;
    let mut ids = || {
        n += 1;
        format!("fuzz-{n}")
    };
    let mut ctx = Ctx {
        received_at: jiff::Timestamp::from_second(1_795_862_235).unwrap(),
        source_id: "fuzz",
        client_ip: Some(std::net::IpAddr::from([127, 0, 0, 1])),
        limits: &limits,
        new_message_id: &mut ids,
    };
    let processed = ferry_event::process(parsed, &mut ctx);
    for accepted in &processed.accepted {
        // Every stored event must be valid JSON.
        assert!(serde_json::from_slice::<serde::de::IgnoredAny>(&accepted.json).is_ok());
    }
});
