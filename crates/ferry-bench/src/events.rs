//! The requests the load generator sends: analytics.js (`npm:next`) `track` events of about
//! 1 KB with a full browser `context`, one per request to `/v1/t` or in batches to
//! `/v1/batch`, shaped like the bodies recorded in
//! `fixtures/real-clients/segment-analytics-next.jsonl`.
//!
//! Requests are built once, before the run, as complete HTTP/1.1 byte strings ([`Template`]).
//! Each `messageId` ends in a fixed-width hexadecimal slot that [`Template::stamp`] overwrites
//! with a fresh counter just before sending, so every event is unique (ferry deduplicates by
//! message id) while the run itself costs one `memcpy` and a few stores per event.

use std::fmt::Write as _;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;

/// Width of the per-event counter at the end of each `messageId`, in hex digits.
pub const ID_DIGITS: usize = 16;
const ID_SLOT: &str = "################";

/// What each request carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    /// One event per request, to `/v1/t` (what analytics.js does by default).
    Single,
    /// This many events per request, to `/v1/batch`.
    Batch(usize),
}

/// One complete request: head and body, with the offsets of its `messageId` slots.
#[derive(Debug, Clone)]
pub struct Template {
    /// The request as sent (request line, headers, body).
    pub bytes: Vec<u8>,
    /// Where each event's id slot starts in `bytes`.
    pub id_offsets: Vec<usize>,
    /// Length of the body alone.
    pub body_len: usize,
}

impl Template {
    /// Events in this request.
    pub fn events(&self) -> u64 {
        self.id_offsets.len() as u64
    }

    /// Copy the request into `out` with fresh message ids taken from `next_id`.
    pub fn stamp(&self, out: &mut Vec<u8>, next_id: &mut u64) {
        out.clear();
        out.extend_from_slice(&self.bytes);
        for &offset in &self.id_offsets {
            write_hex(&mut out[offset..offset + ID_DIGITS], *next_id);
            *next_id += 1;
        }
    }
}

fn write_hex(slot: &mut [u8], mut value: u64) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for byte in slot.iter_mut().rev() {
        *byte = DIGITS[(value & 0xf) as usize];
        value >>= 4;
    }
}

/// How to build the pool of requests.
#[derive(Debug, Clone)]
pub struct PoolSpec {
    pub shape: Shape,
    /// Distinct requests to build; the run cycles through them.
    pub requests: usize,
    /// The source's write key, sent as `Authorization: Basic` and in the body.
    pub write_key: String,
    /// Makes message ids unique across runs; ids read `ajs-next-{run}-{counter}`.
    pub run: String,
    /// Seed of the property values.
    pub seed: u64,
}

/// Build `spec.requests` distinct requests.
pub fn build_pool(spec: &PoolSpec) -> Vec<Template> {
    let mut rng = SplitMix(spec.seed);
    let now = SystemTime::now();
    let auth = STANDARD.encode(format!("{}:", spec.write_key));
    (0..spec.requests.max(1))
        .map(|_| {
            let sent_at = now - Duration::from_millis(rng.below(2_000));
            let (path, body) = match spec.shape {
                Shape::Single => ("/v1/t", event(&mut rng, spec, sent_at)),
                Shape::Batch(n) => {
                    let mut body = String::from(r#"{"batch":["#);
                    for i in 0..n.max(1) {
                        if i > 0 {
                            body.push(',');
                        }
                        body.push_str(&event(&mut rng, spec, sent_at));
                    }
                    let _ = write!(body, r#"],"sentAt":"{}","writeKey":"{}"}}"#, iso8601(sent_at), spec.write_key);
                    ("/v1/batch", body)
                }
            };
            let mut text = format!(
                "POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: keep-alive\r\nContent-Type: text/plain\r\n\
                 Authorization: Basic {auth}\r\nOrigin: https://shop.example.com\r\nUser-Agent: ferry-bench\r\n\
                 Content-Length: {}\r\n\r\n",
                body.len()
            );
            text.push_str(&body);
            let id_offsets = text.match_indices(ID_SLOT).map(|(i, _)| i).collect();
            Template { bytes: text.into_bytes(), id_offsets, body_len: body.len() }
        })
        .collect()
}

/// One `track` event as analytics.js sends it (fields in its order).
fn event(rng: &mut SplitMix, spec: &PoolSpec, sent_at: SystemTime) -> String {
    let timestamp = sent_at - Duration::from_millis(rng.below(5_000));
    let (ua, ua_data) = USER_AGENTS[rng.pick(USER_AGENTS.len())];
    let (product, category) = PRODUCTS[rng.pick(PRODUCTS.len())];
    let page = PAGES[rng.pick(PAGES.len())];
    let (campaign_search, campaign) = CAMPAIGNS[rng.pick(CAMPAIGNS.len())];
    let locale = LOCALES[rng.pick(LOCALES.len())];
    let sku = rng.below(90_000) + 10_000;
    let price = format!("{}.{:02}", rng.below(300) + 5, rng.below(100));
    let (name, properties) = match rng.below(6) {
        0 => (
            "Product Viewed",
            format!(
                r#"{{"product_id":"sku-{sku}","name":"{product}","category":"{category}","price":{price},"currency":"EUR","position":{},"url":"https://shop.example.com/p/{sku}","image_url":"https://cdn.example.com/img/{sku}.jpg"}}"#,
                rng.below(48) + 1
            ),
        ),
        1 => (
            "Product Added",
            format!(
                r#"{{"cart_id":"c{:08x}","product_id":"sku-{sku}","name":"{product}","category":"{category}","price":{price},"quantity":{},"variant":"{}"}}"#,
                rng.next() as u32,
                rng.below(4) + 1,
                ["S", "M", "L", "XL"][rng.pick(4)]
            ),
        ),
        2 => (
            "Products Searched",
            format!(r#"{{"query":"{}","results":{}}}"#, SEARCHES[rng.pick(SEARCHES.len())], rng.below(200)),
        ),
        3 => (
            "Checkout Started",
            format!(
                r#"{{"order_id":"o-{:010}","value":{price},"revenue":{price},"shipping":4.95,"currency":"EUR","products":[{{"product_id":"sku-{sku}","price":{price},"quantity":1}}]}}"#,
                rng.below(10_000_000_000)
            ),
        ),
        4 => (
            "Order Completed",
            format!(
                r#"{{"order_id":"o-{:010}","total":{price},"tax":{}.{:02},"coupon":{},"currency":"EUR","products":[{{"product_id":"sku-{sku}","name":"{product}","price":{price},"quantity":1}}]}}"#,
                rng.below(10_000_000_000),
                rng.below(40),
                rng.below(100),
                if rng.below(4) == 0 { r#""WINTER10""# } else { "null" },
            ),
        ),
        _ => (
            "Video Played",
            format!(
                r#"{{"video_id":"v{}","title":"{product} – review","position":{},"sound":{},"full_screen":{}}}"#,
                rng.below(5_000),
                rng.below(600),
                rng.below(101),
                rng.below(2) == 0
            ),
        ),
    };
    let user_id = if rng.below(3) == 0 { format!(r#""user_{}""#, rng.below(1_000_000)) } else { "null".to_owned() };
    let ua_data = ua_data.map(|d| format!(r#","userAgentData":{d}"#)).unwrap_or_default();
    let (campaign_search, campaign) = (campaign_search, campaign.map(|c| format!(r#","campaign":{c}"#)));
    format!(
        concat!(
            r#"{{"timestamp":"{ts}","integrations":{{"Segment.io":true}},"event":"{name}","type":"track","properties":{properties},"#,
            r#""context":{{"page":{{"path":"{page}","referrer":"{referrer}","search":"{search}","title":"{title}","url":"https://shop.example.com{page}{search}"}},"#,
            r#""userAgent":"{ua}"{ua_data},"locale":"{locale}","library":{{"name":"analytics.js","version":"npm:next-1.84.3"}}{campaign},"timezone":"{tz}"}},"#,
            r#""messageId":"ajs-next-{run}-{slot}","anonymousId":"{anon}","writeKey":"{key}","userId":{user_id},"sentAt":"{sent}","#,
            r#""_metadata":{{"bundled":["Segment.io"],"unbundled":[],"bundledIds":[]}}}}"#
        ),
        ts = iso8601(timestamp),
        name = name,
        properties = properties,
        page = page,
        referrer = REFERRERS[rng.pick(REFERRERS.len())],
        search = campaign_search,
        title = TITLES[rng.pick(TITLES.len())],
        ua = ua,
        ua_data = ua_data,
        locale = locale.0,
        campaign = campaign.unwrap_or_default(),
        tz = locale.1,
        run = spec.run,
        slot = ID_SLOT,
        anon = uuid4(rng),
        key = spec.write_key,
        user_id = user_id,
        sent = iso8601(sent_at),
    )
}

// Value lists. Strings are JSON-escaped already: some carry escaped quotes and non-ASCII
// characters, like real product names do.
const USER_AGENTS: &[(&str, Option<&str>)] = &[
    (
        "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36",
        Some(
            r#"{"brands":[{"brand":"Google Chrome","version":"131"},{"brand":"Chromium","version":"131"},{"brand":"Not_A Brand","version":"24"}],"mobile":false,"platform":"macOS"}"#,
        ),
    ),
    (
        "Mozilla/5.0 (iPhone; CPU iPhone OS 18_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/18.1 Mobile/15E148 Safari/604.1",
        None,
    ),
    ("Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:133.0) Gecko/20100101 Firefox/133.0", None),
    (
        "Mozilla/5.0 (Linux; Android 10; K) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Mobile Safari/537.36",
        Some(
            r#"{"brands":[{"brand":"Google Chrome","version":"131"},{"brand":"Chromium","version":"131"},{"brand":"Not_A Brand","version":"24"}],"mobile":true,"platform":"Android"}"#,
        ),
    ),
    (
        "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36 Edg/131.0.0.0",
        Some(
            r#"{"brands":[{"brand":"Microsoft Edge","version":"131"},{"brand":"Chromium","version":"131"},{"brand":"Not_A Brand","version":"24"}],"mobile":false,"platform":"Windows"}"#,
        ),
    ),
];
const PRODUCTS: &[(&str, &str)] = &[
    (r#"Trail Runner \"Alpine\" GTX"#, "Shoes"),
    ("Merino Sweater Größe M", "Knitwear"),
    ("Café Mug 350 ml", "Kitchen"),
    ("Daypack 22L", "Bags"),
    ("Rain Jacket Storm Pro", "Outerwear"),
    ("Wool Socks (3-pack)", "Accessories"),
    ("Linen Shirt – Sand", "Shirts"),
    ("Ceramic Pour-Over Set", "Kitchen"),
];
const PAGES: &[&str] = &[
    "/",
    "/shop/index.html",
    "/shop/shoes",
    "/p/trail-runner-alpine",
    "/cart",
    "/checkout/payment",
    "/search",
    "/blog/2026/winter-guide",
];
const TITLES: &[&str] =
    &["Shop – Example", "Trail Runner \\\"Alpine\\\" GTX | Example", "Your cart", "Checkout", "Winter guide ❄"];
const REFERRERS: &[&str] =
    &["", "https://www.google.com/", "https://duckduckgo.com/", "https://shop.example.com/shop/shoes"];
const SEARCHES: &[&str] = &["trail shoes", "merino", "rain jacket women", "mug", "größe 42"];
const CAMPAIGNS: &[(&str, Option<&str>)] = &[
    ("", None),
    (
        "?utm_source=newsletter&utm_medium=email&utm_campaign=launch",
        Some(r#"{"source":"newsletter","medium":"email","name":"launch"}"#),
    ),
    (
        "?utm_source=google&utm_medium=cpc&utm_campaign=winter_sale&utm_term=trail+shoes",
        Some(r#"{"source":"google","medium":"cpc","name":"winter_sale","term":"trail shoes"}"#),
    ),
];
const LOCALES: &[(&str, &str)] =
    &[("en-US", "America/New_York"), ("de-DE", "Europe/Berlin"), ("fr-FR", "Europe/Paris"), ("en-GB", "Europe/London")];

/// SplitMix64: small, fast, good enough to vary property values.
struct SplitMix(u64);

impl SplitMix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
    fn pick(&mut self, len: usize) -> usize {
        self.below(len as u64) as usize
    }
}

fn uuid4(rng: &mut SplitMix) -> String {
    let (a, b) = (rng.next(), rng.next());
    format!(
        "{:08x}-{:04x}-4{:03x}-{:x}{:03x}-{:012x}",
        a >> 32,
        (a >> 16) & 0xffff,
        a & 0xfff,
        8 + (b >> 62),
        (b >> 48) & 0xfff,
        b & 0xffff_ffff_ffff
    )
}

/// `2026-11-28T10:37:25.593Z`, as analytics.js writes timestamps.
pub fn iso8601(t: SystemTime) -> String {
    let since = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = since.as_secs();
    let (year, month, day) = civil_from_days((secs / 86_400) as i64);
    let s = secs % 86_400;
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        s / 3600,
        s / 60 % 60,
        s % 60,
        since.subsec_millis()
    )
}

/// Days since 1970-01-01 to (year, month, day); Howard Hinnant's algorithm.
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(month <= 2), month, day)
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;

    fn spec(shape: Shape, requests: usize) -> PoolSpec {
        PoolSpec { shape, requests, write_key: "wk_bench".to_owned(), run: "1700000000000-1".to_owned(), seed: 7 }
    }

    fn body(request: &[u8]) -> &[u8] {
        let end = request.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
        &request[end + 4..]
    }

    #[test]
    fn single_events_are_valid_varied_and_about_one_kilobyte() {
        let pool = build_pool(&spec(Shape::Single, 200));
        let mut next = 0;
        let mut ids = HashSet::new();
        let mut sizes = 0;
        let mut names = HashSet::new();
        for template in &pool {
            let mut out = Vec::new();
            template.stamp(&mut out, &mut next);
            assert!(out.starts_with(b"POST /v1/t HTTP/1.1\r\n"));
            let body = body(&out);
            assert_eq!(body.len(), template.body_len);
            let text = String::from_utf8_lossy(&out);
            assert!(text.contains(&format!("Content-Length: {}\r\n", body.len())));
            let event: serde_json::Value = serde_json::from_slice(body).unwrap();
            assert_eq!(event["type"], "track");
            assert!(event["context"]["page"]["url"].as_str().unwrap().starts_with("https://"));
            assert_eq!(event["context"]["library"]["name"], "analytics.js");
            assert!(ids.insert(event["messageId"].as_str().unwrap().to_owned()));
            names.insert(event["event"].as_str().unwrap().to_owned());
            sizes += body.len();
        }
        let mean = sizes / pool.len();
        assert!((850..=1_350).contains(&mean), "mean body {mean} B");
        assert!(names.len() >= 5);
    }

    #[test]
    fn stamping_the_same_template_twice_gives_new_ids() {
        let pool = build_pool(&spec(Shape::Batch(100), 2));
        let mut next = 0xabc;
        let (mut a, mut b) = (Vec::new(), Vec::new());
        pool[0].stamp(&mut a, &mut next);
        pool[0].stamp(&mut b, &mut next);
        assert_eq!(next, 0xabc + 200);
        let ids = |request: &[u8]| -> Vec<String> {
            let batch: serde_json::Value = serde_json::from_slice(body(request)).unwrap();
            batch["batch"].as_array().unwrap().iter().map(|e| e["messageId"].as_str().unwrap().to_owned()).collect()
        };
        let (ia, ib) = (ids(&a), ids(&b));
        assert_eq!(ia.len(), 100);
        assert_eq!(ia[0], "ajs-next-1700000000000-1-0000000000000abc");
        let all: HashSet<_> = ia.iter().chain(&ib).collect();
        assert_eq!(all.len(), 200);
        assert!(a.starts_with(b"POST /v1/batch HTTP/1.1\r\n"));
    }

    #[test]
    fn dates() {
        assert_eq!(iso8601(UNIX_EPOCH), "1970-01-01T00:00:00.000Z");
        assert_eq!(iso8601(UNIX_EPOCH + Duration::from_millis(1_795_862_245_593)), "2026-11-28T10:37:25.593Z");
        assert_eq!(iso8601(UNIX_EPOCH + Duration::from_secs(951_782_400)), "2000-02-29T00:00:00.000Z");
    }
}
