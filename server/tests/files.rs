//! Static files: validators, conditional requests, ranges, HEAD, atomic replacement.
use reqwest::header::{
    ACCEPT_RANGES, CONTENT_LENGTH, CONTENT_RANGE, CONTENT_TYPE, ETAG, IF_MODIFIED_SINCE,
    IF_NONE_MATCH, IF_RANGE, LAST_MODIFIED, RANGE,
};
use reqwest::StatusCode;

use crate::util::{bundle_bytes, channel_doc, client, status_of, TestServer, BUNDLE_LEN};

const BUNDLE: &str = "/bundles/demo-os-2.0.0.tandem";

#[test]
fn get_sends_body_and_validators() {
    let s = TestServer::start();
    let r = client().get(s.url("/channels/stable.json")).send().unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let h = r.headers().clone();
    let etag = h[ETAG].to_str().unwrap();
    assert!(
        etag.starts_with('"') && etag.ends_with('"'),
        "strong etag: {etag}"
    );
    assert!(h[LAST_MODIFIED].to_str().unwrap().ends_with(" GMT"));
    assert_eq!(h[ACCEPT_RANGES], "bytes");
    assert_eq!(h[CONTENT_TYPE], "application/json");
    assert_eq!(r.text().unwrap(), channel_doc(1, "2.0.0"));
}

#[test]
fn whole_bundle_is_streamed_intact() {
    let s = TestServer::start();
    let r = client().get(s.url(BUNDLE)).send().unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.headers()[CONTENT_LENGTH], BUNDLE_LEN.to_string().as_str());
    assert_eq!(r.headers()[CONTENT_TYPE], "application/octet-stream");
    assert!(r.bytes().unwrap() == bundle_bytes());
}

#[test]
fn if_none_match_answers_304() {
    let s = TestServer::start();
    let c = client();
    let url = s.url("/channels/stable.json");
    let etag = c.get(&url).send().unwrap().headers()[ETAG]
        .to_str()
        .unwrap()
        .to_owned();
    for tag in [
        etag.clone(),
        format!("W/{etag}"),
        format!("\"other\", {etag}"),
        "*".to_owned(),
    ] {
        let r = c.get(&url).header(IF_NONE_MATCH, &tag).send().unwrap();
        assert_eq!(r.status(), StatusCode::NOT_MODIFIED, "{tag}");
        assert_eq!(r.headers()[ETAG].to_str().unwrap(), etag);
        assert!(r.bytes().unwrap().is_empty());
    }
    let r = c
        .get(&url)
        .header(IF_NONE_MATCH, "\"stale\"")
        .send()
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
}

#[test]
fn if_modified_since_answers_304() {
    let s = TestServer::start();
    let c = client();
    let url = s.url("/root.json");
    let lm = c.get(&url).send().unwrap().headers()[LAST_MODIFIED]
        .to_str()
        .unwrap()
        .to_owned();
    let r = c.get(&url).header(IF_MODIFIED_SINCE, &lm).send().unwrap();
    assert_eq!(r.status(), StatusCode::NOT_MODIFIED);
    let r = c
        .get(&url)
        .header(IF_MODIFIED_SINCE, "Sun, 06 Nov 1994 08:49:37 GMT")
        .send()
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
}

fn range_of(s: &TestServer, spec: &str) -> reqwest::blocking::Response {
    client()
        .get(s.url(BUNDLE))
        .header(RANGE, spec)
        .send()
        .unwrap()
}

#[test]
fn single_ranges_answer_206() {
    let s = TestServer::start();
    let all = bundle_bytes();
    let len = BUNDLE_LEN;
    let mib = 1024 * 1024;
    let cases = [
        ("bytes=0-99".to_owned(), 0, 99),
        (format!("bytes={}-{}", mib, 2 * mib - 1), mib, 2 * mib - 1),
        ("bytes=-500".to_owned(), len - 500, len - 1),
        (format!("bytes={}-", len - 1000), len - 1000, len - 1),
        (format!("bytes=10-{}", len * 2), 10, len - 1),
    ];
    for (spec, first, last) in cases {
        let r = range_of(&s, &spec);
        assert_eq!(r.status(), StatusCode::PARTIAL_CONTENT, "{spec}");
        assert_eq!(
            r.headers()[CONTENT_RANGE].to_str().unwrap(),
            format!("bytes {first}-{last}/{len}"),
            "{spec}"
        );
        assert_eq!(
            r.headers()[CONTENT_LENGTH],
            (last - first + 1).to_string().as_str()
        );
        assert!(r.bytes().unwrap() == all[first..=last], "{spec} body");
    }
}

#[test]
fn unsatisfiable_range_answers_416() {
    let s = TestServer::start();
    for spec in [format!("bytes={BUNDLE_LEN}-"), "bytes=-0".to_owned()] {
        let r = range_of(&s, &spec);
        assert_eq!(r.status(), StatusCode::RANGE_NOT_SATISFIABLE, "{spec}");
        assert_eq!(
            r.headers()[CONTENT_RANGE].to_str().unwrap(),
            format!("bytes */{BUNDLE_LEN}")
        );
    }
}

#[test]
fn multi_range_and_stale_if_range_get_the_whole_file() {
    let s = TestServer::start();
    let r = range_of(&s, "bytes=0-1,5-6");
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.bytes().unwrap().len(), BUNDLE_LEN);
    let etag = client().head(s.url(BUNDLE)).send().unwrap().headers()[ETAG].clone();
    let c = client();
    let r = c
        .get(s.url(BUNDLE))
        .header(RANGE, "bytes=0-9")
        .header(IF_RANGE, "\"old\"")
        .send()
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK, "a changed file is sent whole");
    let r = c
        .get(s.url(BUNDLE))
        .header(RANGE, "bytes=0-9")
        .header(IF_RANGE, etag)
        .send()
        .unwrap();
    assert_eq!(r.status(), StatusCode::PARTIAL_CONTENT);
    assert_eq!(r.bytes().unwrap().len(), 10);
}

#[test]
fn head_has_get_headers_and_no_body() {
    let s = TestServer::start();
    let get = client().get(s.url(BUNDLE)).send().unwrap();
    let head = client().head(s.url(BUNDLE)).send().unwrap();
    assert_eq!(head.status(), StatusCode::OK);
    for name in [
        ETAG,
        LAST_MODIFIED,
        CONTENT_LENGTH,
        ACCEPT_RANGES,
        CONTENT_TYPE,
    ] {
        assert_eq!(head.headers()[&name], get.headers()[&name], "{name}");
    }
    // On the wire: the announced length, and no body bytes after the head.
    let raw =
        s.raw(format!("HEAD {BUNDLE} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n").as_bytes());
    assert_eq!(status_of(&raw), 200);
    assert!(raw
        .to_ascii_lowercase()
        .contains(&format!("content-length: {BUNDLE_LEN}")));
    assert!(raw.ends_with("\r\n\r\n"), "no body after a HEAD response");
}

#[test]
fn replaced_channel_file_is_served_without_restart() {
    let s = TestServer::start();
    let c = client();
    let url = s.url("/channels/stable.json");
    let old = c.get(&url).send().unwrap().headers()[ETAG].clone();
    // Publish as tandem-signer does: write a temp file, rename over the old one.
    let tmp = s.repo().join("channels/.stable.json.tmp");
    std::fs::write(&tmp, channel_doc(2, "3.0.0")).unwrap();
    std::fs::rename(&tmp, s.repo().join("channels/stable.json")).unwrap();
    let r = c
        .get(&url)
        .header(IF_NONE_MATCH, old.clone())
        .send()
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_ne!(r.headers()[ETAG], old);
    assert_eq!(r.text().unwrap(), channel_doc(2, "3.0.0"));
}

#[test]
fn missing_files_methods_and_layout() {
    let s = TestServer::start();
    let c = client();
    assert_eq!(
        c.get(s.url("/channels/nope.json")).send().unwrap().status(),
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        c.get(s.url("/etc/passwd")).send().unwrap().status(),
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        c.get(s.url("/channels")).send().unwrap().status(),
        StatusCode::NOT_FOUND
    );
    let r = c.post(s.url("/root.json")).body("x").send().unwrap();
    assert_eq!(r.status(), StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(r.headers()["allow"], "GET, HEAD");
    // A symlink that stays inside the repository is followed.
    let r = c.get(s.url("/bundles/alias.json")).send().unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert!(r.text().unwrap().contains("\"version\":1"));
}

/// Drops the file's pages from the page cache (no root needed for clean pages of one's own
/// file), so the next body is read on the blocking pool rather than sent with `sendfile`.
fn evict(path: &std::path::Path) {
    let f = std::fs::File::open(path).unwrap();
    f.sync_all().unwrap();
    rustix::fs::fadvise(&f, 0, None, rustix::fs::Advice::DontNeed).unwrap();
}

/// On one keep-alive connection, bodies sent with `sendfile` (cached pages, frames of up to
/// 1 MiB) and bodies read on the blocking pool (evicted pages) follow each other, whole files
/// and ranges spanning several frames, and every byte arrives in order.
#[test]
fn bodies_stay_intact_on_one_connection_cached_or_not() {
    let s = TestServer::start();
    let all = bundle_bytes();
    let c = client();
    let path = s.repo().join(BUNDLE.trim_start_matches('/'));
    for round in 0..4 {
        if round % 2 == 1 {
            evict(&path);
        }
        let whole = c.get(s.url(BUNDLE)).send().unwrap();
        assert!(whole.bytes().unwrap() == all, "round {round}: whole file");
        let first = 1000 + round * 4096;
        let r = c
            .get(s.url(BUNDLE))
            .header(RANGE, format!("bytes={first}-"))
            .send()
            .unwrap();
        assert_eq!(r.status(), StatusCode::PARTIAL_CONTENT);
        assert!(r.bytes().unwrap() == all[first..], "round {round}: range");
        let head = c.head(s.url(BUNDLE)).send().unwrap();
        assert_eq!(
            head.headers()[CONTENT_LENGTH],
            BUNDLE_LEN.to_string().as_str()
        );
    }
}

/// Conditional polls of a known file are answered from a `statx` of its path (no open); a
/// republish by rename, a rewrite in place and a swap for a symlink leading outside must all
/// be seen by the very next poll.
#[test]
fn conditional_polls_see_every_change_at_once() {
    let s = TestServer::start();
    let c = client();
    let url = s.url("/channels/stable.json");
    let channel = s.repo().join("channels/stable.json");
    let poll = |etag: &reqwest::header::HeaderValue| {
        c.get(&url).header(IF_NONE_MATCH, etag).send().unwrap()
    };
    let first = c.get(&url).send().unwrap().headers()[ETAG].clone();
    for _ in 0..3 {
        let r = poll(&first);
        assert_eq!(r.status(), StatusCode::NOT_MODIFIED);
        assert_eq!(r.headers()[ETAG], first);
        assert_eq!(r.headers()[CONTENT_TYPE], "application/json");
        assert!(r.headers().contains_key(LAST_MODIFIED));
    }
    // Republish as tandem-signer does: a new file renamed over the old one.
    let tmp = s.repo().join("channels/.stable.json.tmp");
    std::fs::write(&tmp, channel_doc(2, "3.0.0")).unwrap();
    std::fs::rename(&tmp, &channel).unwrap();
    let r = poll(&first);
    assert_eq!(
        r.status(),
        StatusCode::OK,
        "republished: no 304 for the old ETag"
    );
    let second = r.headers()[ETAG].clone();
    assert_ne!(second, first);
    assert_eq!(r.text().unwrap(), channel_doc(2, "3.0.0"));
    assert_eq!(poll(&second).status(), StatusCode::NOT_MODIFIED);
    // Rewritten in place: same inode, new size (and modification time).
    std::fs::write(&channel, channel_doc(3, "3.0.10")).unwrap();
    let r = poll(&second);
    assert_eq!(
        r.status(),
        StatusCode::OK,
        "rewritten: no 304 for the old ETag"
    );
    let third = r.headers()[ETAG].clone();
    assert_ne!(third, second);
    assert_eq!(r.text().unwrap(), channel_doc(3, "3.0.10"));
    assert_eq!(poll(&third).status(), StatusCode::NOT_MODIFIED);
    // Swapped for a symlink leading outside the repository: refused, even with the ETag of
    // the file that was there.
    let outside = s.root.path().join("outside.json");
    std::fs::write(&outside, channel_doc(4, "6.6.6")).unwrap();
    std::fs::remove_file(&channel).unwrap();
    std::os::unix::fs::symlink(&outside, &channel).unwrap();
    assert_eq!(poll(&third).status(), StatusCode::FORBIDDEN);
    // Removed: not found.
    std::fs::remove_file(&channel).unwrap();
    assert_eq!(poll(&third).status(), StatusCode::NOT_FOUND);
}
