//! `/v1/files` and `image.thumbnail`: uploads into the JetStream object store,
//! owner-only downloads, real resizing, and hostile images failing cleanly.

use std::io::Cursor;

use image::{DynamicImage, ImageFormat, Rgba, RgbaImage};
use jobstream_core::EventType;
use jobstream_core::kinds::Catalogue;
use jobstream_testkit::Backend;
use jobstream_worker::thumbnail::ImageLimits;
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::RealKinds;
use crate::helpers::{TestApp, db_test};

fn png(w: u32, h: u32) -> Vec<u8> {
    let img = RgbaImage::from_fn(w, h, |x, y| {
        Rgba([(x % 256) as u8, (y % 256) as u8, 128, 255])
    });
    let mut out = Cursor::new(Vec::new());
    DynamicImage::ImageRgba8(img)
        .write_to(&mut out, ImageFormat::Png)
        .unwrap();
    out.into_inner()
}

/// CRC-32 (IEEE) as PNG chunks use it.
fn crc32(bytes: &[u8]) -> u32 {
    let mut crc = 0xFFFF_FFFFu32;
    for &b in bytes {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ 0xEDB8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

fn chunk(kind: &[u8; 4], data: &[u8]) -> Vec<u8> {
    let mut c = (data.len() as u32).to_be_bytes().to_vec();
    let mut body = kind.to_vec();
    body.extend_from_slice(data);
    c.extend_from_slice(&body);
    c.extend_from_slice(&crc32(&body).to_be_bytes());
    c
}

/// A 60-byte PNG that declares 100,000 × 100,000 RGBA pixels (40 GB once decoded).
fn decompression_bomb() -> Vec<u8> {
    let mut ihdr = Vec::new();
    ihdr.extend_from_slice(&100_000u32.to_be_bytes());
    ihdr.extend_from_slice(&100_000u32.to_be_bytes());
    ihdr.extend_from_slice(&[8, 6, 0, 0, 0]);
    let mut png = b"\x89PNG\r\n\x1a\n".to_vec();
    png.extend(chunk(b"IHDR", &ihdr));
    png.extend(chunk(
        b"IDAT",
        &[0x78, 0x9C, 0x03, 0x00, 0x00, 0x00, 0x00, 0x01],
    ));
    png.extend(chunk(b"IEND", &[]));
    png
}

async fn uploads_are_checked_and_only_their_owner_can_download_them(backend: Backend) {
    let app = TestApp::with_real_kinds(backend, RealKinds::default(), Catalogue::builtin()).await;
    let (alice, bob, admin) = (
        app.token("alice", false),
        app.token("bob", false),
        app.token("root", true),
    );
    let photo = png(64, 48);

    let res = app.upload(&alice, "image/png", photo.clone()).await;
    assert_eq!(res.status(), StatusCode::CREATED);
    let body: Value = res.json().await.unwrap();
    assert_eq!(
        (body["owner"].as_str(), body["content_type"].as_str()),
        (Some("alice"), Some("image/png"))
    );
    assert_eq!(body["size"].as_u64(), Some(photo.len() as u64));
    let id = body["id"].as_str().unwrap();

    assert_eq!(
        app.download(&alice, id).await,
        (StatusCode::OK, "image/png".into(), photo.clone())
    );
    assert_eq!(app.download(&admin, id).await.0, StatusCode::OK);
    assert_eq!(
        app.download(&bob, id).await.0,
        StatusCode::NOT_FOUND,
        "another user's file is a 404"
    );
    assert_eq!(
        app.download(&alice, &uuid::Uuid::now_v7().to_string())
            .await
            .0,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        app.download(&alice, "../etc").await.0,
        StatusCode::NOT_FOUND
    );

    // The declared type must be an accepted image type and match the bytes.
    assert_eq!(
        app.upload(&alice, "image/jpeg", photo.clone())
            .await
            .status(),
        StatusCode::UNSUPPORTED_MEDIA_TYPE
    );
    assert_eq!(
        app.upload(&alice, "image/png", b"<html>hi</html>".to_vec())
            .await
            .status(),
        StatusCode::UNSUPPORTED_MEDIA_TYPE
    );
    assert_eq!(
        app.upload(&alice, "text/html", b"<html>".to_vec())
            .await
            .status(),
        StatusCode::UNSUPPORTED_MEDIA_TYPE
    );
    // The test API accepts 1 MiB. A 2 MiB upload is refused from its Content-Length, before
    // the body is read (so the server may close while a client still writes: read the answer
    // on a raw connection that sends only the headers).
    let head = app
        .raw_upload_head(&alice, "image/png", 2 * 1024 * 1024)
        .await;
    assert!(head.starts_with("HTTP/1.1 413"), "{head}");
    assert!(
        head.to_ascii_lowercase()
            .contains("content-type: application/problem+json"),
        "{head}"
    );
    assert_eq!(
        app.http
            .post(format!("{}/v1/files", app.base))
            .header("content-type", "image/png")
            .body(photo)
            .send()
            .await
            .unwrap()
            .status(),
        StatusCode::UNAUTHORIZED
    );
}
db_test!(uploads_are_checked_and_only_their_owner_can_download_them);

async fn thumbnails_are_made_stored_and_downloadable(backend: Backend) {
    let app = TestApp::with_real_kinds(backend, RealKinds::default(), Catalogue::builtin()).await;
    let (alice, bob) = (app.token("alice", false), app.token("bob", false));
    let source = app.upload_ok(&alice, "image/png", png(400, 300)).await;

    for (format, content_type, decoded_as) in [
        ("png", "image/png", ImageFormat::Png),
        ("jpeg", "image/jpeg", ImageFormat::Jpeg),
        ("webp", "image/webp", ImageFormat::WebP),
    ] {
        let row = app
            .run_job(&alice, &json!({"kind": "image.thumbnail", "payload": {"file_id": source, "width": 100, "height": 100, "format": format}}))
            .await;
        assert_eq!(row.status, "succeeded", "{format}: {:?}", row.error);
        let result = row.result.unwrap();
        assert_eq!(
            (result["width"].as_u64(), result["height"].as_u64()),
            (Some(100), Some(75)),
            "{result}"
        );
        assert_eq!(
            result["source"],
            json!({"file_id": source, "width": 400, "height": 300})
        );
        let thumb_id = result["file_id"].as_str().unwrap();
        let (status, ct, bytes) = app.download(&alice, thumb_id).await;
        assert_eq!((status, ct.as_str()), (StatusCode::OK, content_type));
        let img =
            image::load_from_memory_with_format(&bytes, decoded_as).expect("a decodable thumbnail");
        assert_eq!((img.width(), img.height()), (100, 75));
        assert_eq!(
            app.download(&bob, thumb_id).await.0,
            StatusCode::NOT_FOUND,
            "the thumbnail keeps its owner"
        );
    }

    // Bob cannot thumbnail Alice's photo: the job fails, nothing is revealed.
    let row = app
        .run_job(&bob, &json!({"kind": "image.thumbnail", "payload": {"file_id": source, "width": 10, "height": 10}}))
        .await;
    assert_eq!(row.status, "failed");
    assert!(row.error.unwrap().contains("no file"));
}
db_test!(thumbnails_are_made_stored_and_downloadable);

async fn corrupt_images_and_decompression_bombs_fail_without_harming_the_worker(backend: Backend) {
    let limits = ImageLimits {
        max_side: 8_000,
        max_alloc: 64 * 1024 * 1024,
        ..ImageLimits::default()
    };
    let app = TestApp::with_real_kinds(
        backend,
        RealKinds {
            images: limits,
            ..RealKinds::default()
        },
        Catalogue::builtin(),
    )
    .await;
    let alice = app.token("alice", false);

    let bomb = app
        .upload_ok(&alice, "image/png", decompression_bomb())
        .await;
    let mut truncated = png(200, 200);
    truncated.truncate(truncated.len() / 3);
    let corrupt = app.upload_ok(&alice, "image/png", truncated).await;

    let started = std::time::Instant::now();
    let row = app
        .run_job(&alice, &json!({"kind": "image.thumbnail", "payload": {"file_id": bomb, "width": 64, "height": 64}}))
        .await;
    assert_eq!(row.status, "failed");
    let error = row.error.unwrap();
    assert!(error.contains("exceeds the decoder limits"), "{error}");
    assert_eq!(row.attempt, 1, "fatal: no retry");
    assert!(app.events_of(&row.id, EventType::Retrying).await.is_empty());
    assert!(
        started.elapsed() < std::time::Duration::from_secs(20),
        "refused quickly, not decoded"
    );

    let row = app
        .run_job(&alice, &json!({"kind": "image.thumbnail", "payload": {"file_id": corrupt, "width": 64, "height": 64}}))
        .await;
    assert_eq!(row.status, "failed");
    assert!(
        row.error.as_deref().unwrap_or("").contains("corrupt image")
            || row.error.as_deref().unwrap_or("").contains("decode"),
        "{:?}",
        row.error
    );
    assert_eq!(row.attempt, 1);

    // The worker is unharmed: the next job runs.
    let ok = app
        .run_job(
            &alice,
            &json!({"kind": "echo", "payload": {"still": "alive"}}),
        )
        .await;
    assert_eq!(ok.status, "succeeded");
}
db_test!(corrupt_images_and_decompression_bombs_fail_without_harming_the_worker);
