//! One realistic stored track event (~1.3 KB, 20 properties, 10 event names), as
//! ferry-event writes it: shared by the delivery benchmarks here and in ferry-nats.

#![allow(dead_code)]

pub(crate) const EVENTS: [&str; 10] = [
    "Product Viewed",
    "Product Added",
    "Cart Viewed",
    "Checkout Started",
    "Order Completed",
    "Signed Up",
    "Signed In",
    "Products Searched",
    "Video Played",
    "Article Read",
];

/// One stored track event, as ferry-event writes it, ~1.3 KB.
pub(crate) fn stored(source: &str, i: u64, received: jiff::Timestamp) -> String {
    let event = EVENTS[(i % 10) as usize];
    let at = ferry_event::format_time(received);
    format!(
        concat!(
            r#"{{"type":"track","messageId":"bench-{source}-{i}","anonymousId":"a{anon:08x}-3c1f-4e8b-9b1a-5d2e8f7c6a90","userId":"user_{user}","event":"{event}","#,
            r#""properties":{{"product_id":"sku-{i}","sku":"G-32","category":"Games","name":"Monopoly: 3rd Edition","brand":"Hasbro","variant":"200 pieces","price":18.99,"quantity":{q},"coupon":"MAYDEALS","currency":"USD","position":{p},"value":18.99,"revenue":{rev},"url":"https://www.example.com/product/path","image_url":"https://www.example.com/product/path.jpg","in_stock":true,"rating":4.5,"reviews":{rv},"discount":2.5,"list_id":"hot_deals_1"}},"#,
            r#""context":{{"ip":"203.0.113.7","library":{{"name":"analytics.js","version":"npm:next-1.84.3"}},"locale":"en-US","page":{{"path":"/shop/index.html","referrer":"https://www.google.com/","search":"?utm_source=newsletter","title":"Shop","url":"https://www.example.com/shop/index.html?utm_source=newsletter"}},"userAgent":"Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/156.0.0.0 Safari/537.36","campaign":{{"source":"newsletter","medium":"email","name":"launch"}},"timezone":"Europe/Paris"}},"#,
            r#""integrations":{{}},"channel":"browser","originalTimestamp":"{at}","sentAt":"{at}","timestamp":"{at}","receivedAt":"{at}","version":2,"sourceId":"{source}"}}"#
        ),
        source = source,
        i = i,
        anon = i * 2_654_435_761 % 0xffff_ffff,
        user = i % 5000,
        event = event,
        q = 1 + i % 5,
        p = i % 20,
        rev = 18.99 * (1 + i % 5) as f64,
        rv = i % 1000,
        at = at,
    )
}
