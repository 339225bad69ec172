//! `image.thumbnail`: the photo service's job. Reads an uploaded image from the
//! files bucket, resizes it to fit `width`×`height` (keeping its aspect ratio),
//! stores the thumbnail in the bucket with the source's owner, and returns its id.
//!
//! Untrusted images are decoded on the blocking pool under [`image::Limits`]
//! (largest side and largest allocation), so a corrupt file or a decompression
//! bomb fails the job with a clear, fatal error instead of exhausting memory or
//! stalling the worker's async threads.

use std::io::Cursor;

use async_trait::async_trait;
use image::{DynamicImage, ImageError, ImageFormat, ImageReader, Limits};
use jobstream_core::files::{FileError, FileStore, NewFile};
use serde::Deserialize;
use serde_json::{Value, json};
use uuid::Uuid;

use crate::handler::{Handler, JobContext, JobError};

/// Bounds on what the worker agrees to decode.
#[derive(Debug, Clone, Copy)]
pub struct ImageLimits {
    /// Largest source file, in bytes.
    pub max_file_bytes: u64,
    /// Largest width or height of a source image, in pixels.
    pub max_side: u32,
    /// Most memory the decoder may allocate for one image, in bytes.
    pub max_alloc: u64,
}

impl Default for ImageLimits {
    fn default() -> Self {
        ImageLimits {
            max_file_bytes: crate::defaults::IMAGE_MAX_FILE_BYTES,
            max_side: crate::defaults::IMAGE_MAX_SIDE,
            max_alloc: crate::defaults::IMAGE_MAX_ALLOC,
        }
    }
}

/// Output format of a thumbnail.
#[derive(Debug, Clone, Copy, Deserialize, Default, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
enum Format {
    #[default]
    Png,
    Jpeg,
    Webp,
}

impl Format {
    fn image_format(self) -> ImageFormat {
        match self {
            Format::Png => ImageFormat::Png,
            Format::Jpeg => ImageFormat::Jpeg,
            Format::Webp => ImageFormat::WebP,
        }
    }
    fn content_type(self) -> &'static str {
        match self {
            Format::Png => "image/png",
            Format::Jpeg => "image/jpeg",
            Format::Webp => "image/webp",
        }
    }
    fn name(self) -> &'static str {
        match self {
            Format::Png => "png",
            Format::Jpeg => "jpeg",
            Format::Webp => "webp",
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Payload {
    file_id: Uuid,
    width: u32,
    height: u32,
    #[serde(default)]
    format: Format,
}

/// What one resize produced.
struct Resized {
    bytes: Vec<u8>,
    source: (u32, u32),
    size: (u32, u32),
}

/// The `image.thumbnail` handler.
pub struct Thumbnail {
    files: FileStore,
    limits: ImageLimits,
}

impl Thumbnail {
    /// A handler reading and writing `files`.
    pub fn new(files: FileStore, limits: ImageLimits) -> Self {
        Thumbnail { files, limits }
    }
}

/// Id of the thumbnail a job makes: derived from the job id, so a retried job
/// replaces its own earlier output instead of leaving a second copy.
pub fn thumbnail_id(job_id: Uuid) -> Uuid {
    Uuid::new_v5(&job_id, b"image.thumbnail")
}

#[async_trait]
impl Handler for Thumbnail {
    async fn run(&self, ctx: JobContext) -> Result<Value, JobError> {
        let p: Payload = serde_json::from_value(ctx.payload)
            .map_err(|e| JobError::Fatal(format!("payload: {e}")))?;
        if p.width == 0 || p.height == 0 {
            return Err(JobError::Fatal(
                "payload: width and height must be positive".into(),
            ));
        }
        let not_found = || JobError::Fatal(format!("no file {} (or not yours)", p.file_id));
        let (info, bytes) = match self.files.get(p.file_id, self.limits.max_file_bytes).await {
            Ok(Some(found)) => found,
            Ok(None) => return Err(not_found()),
            Err(e @ FileError::TooLarge { .. }) => return Err(JobError::Fatal(e.to_string())),
            Err(e) => return Err(JobError::Failed(e.to_string())),
        };
        // Ownership comes from the object's metadata: a job may only read its owner's files.
        if info.owner != ctx.owner {
            return Err(not_found());
        }
        let limits = self.limits;
        let resized = tokio::task::spawn_blocking(move || {
            resize(&bytes, limits, p.width, p.height, p.format)
        })
        .await
        .map_err(|e| JobError::Fatal(format!("image decoder crashed: {e}")))??;
        let id = thumbnail_id(ctx.job_id);
        let stored = self
            .files
            .put(
                &NewFile {
                    id,
                    owner: info.owner.clone(),
                    content_type: p.format.content_type().to_owned(),
                    source_file: Some(info.id),
                    job_id: Some(ctx.job_id),
                },
                &resized.bytes,
            )
            .await
            .map_err(|e| JobError::Failed(e.to_string()))?;
        tracing::info!(file_id = %id, width = resized.size.0, height = resized.size.1, "thumbnail stored");
        Ok(json!({
            "file_id": id,
            "url": format!("/v1/files/{id}"),
            "width": resized.size.0,
            "height": resized.size.1,
            "format": p.format.name(),
            "content_type": stored.content_type,
            "size": stored.size,
            "source": {"file_id": info.id, "width": resized.source.0, "height": resized.source.1},
        }))
    }
}

/// Decodes under `limits`, resizes to fit the box, encodes. Runs on the blocking pool.
fn resize(
    bytes: &[u8],
    limits: ImageLimits,
    width: u32,
    height: u32,
    format: Format,
) -> Result<Resized, JobError> {
    let mut reader = ImageReader::new(Cursor::new(bytes))
        .with_guessed_format()
        .map_err(|e| JobError::Fatal(format!("cannot read the image: {e}")))?;
    let mut l = Limits::default();
    l.max_image_width = Some(limits.max_side);
    l.max_image_height = Some(limits.max_side);
    l.max_alloc = Some(limits.max_alloc);
    reader.limits(l);
    let img = reader.decode().map_err(|e| decode_error(&e, limits))?;
    let source = (img.width(), img.height());
    let thumb = img.thumbnail(width, height);
    let size = (thumb.width(), thumb.height());
    // JPEG has no alpha channel; the WebP encoder takes 8-bit RGB(A).
    let thumb = match format {
        Format::Jpeg => DynamicImage::ImageRgb8(thumb.to_rgb8()),
        Format::Webp => DynamicImage::ImageRgba8(thumb.to_rgba8()),
        Format::Png => thumb,
    };
    let mut out = Cursor::new(Vec::new());
    thumb
        .write_to(&mut out, format.image_format())
        .map_err(|e| {
            JobError::Fatal(format!(
                "cannot encode the thumbnail as {}: {e}",
                format.name()
            ))
        })?;
    Ok(Resized {
        bytes: out.into_inner(),
        source,
        size,
    })
}

/// Every decoding problem is a property of the file: retrying cannot help.
fn decode_error(e: &ImageError, limits: ImageLimits) -> JobError {
    match e {
        ImageError::Limits(l) => JobError::Fatal(format!(
            "image refused: it exceeds the decoder limits (at most {} px per side, {} MiB of memory): {l}",
            limits.max_side,
            limits.max_alloc / (1024 * 1024)
        )),
        ImageError::Unsupported(u) => JobError::Fatal(format!("unsupported image: {u}")),
        ImageError::Decoding(d) => JobError::Fatal(format!("corrupt image: {d}")),
        other => JobError::Fatal(format!("cannot decode the image: {other}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn png(w: u32, h: u32) -> Vec<u8> {
        let img = DynamicImage::ImageRgba8(image::RgbaImage::from_pixel(
            w,
            h,
            image::Rgba([200, 10, 10, 255]),
        ));
        let mut out = Cursor::new(Vec::new());
        img.write_to(&mut out, ImageFormat::Png).unwrap();
        out.into_inner()
    }

    #[test]
    fn resizes_to_fit_and_encodes_each_format() {
        for (format, magic) in [
            (Format::Png, &b"\x89PNG"[..]),
            (Format::Jpeg, &[0xFF, 0xD8][..]),
            (Format::Webp, &b"RIFF"[..]),
        ] {
            let r = resize(&png(80, 40), ImageLimits::default(), 20, 20, format).unwrap();
            assert_eq!((r.source, r.size), ((80, 40), (20, 10)));
            assert!(r.bytes.starts_with(magic), "{format:?}");
        }
    }

    #[test]
    fn corrupt_and_oversized_images_are_fatal() {
        let mut broken = png(10, 10);
        broken.truncate(broken.len() / 2);
        assert!(matches!(
            resize(&broken, ImageLimits::default(), 5, 5, Format::Png),
            Err(JobError::Fatal(_))
        ));
        assert!(matches!(
            resize(b"not an image", ImageLimits::default(), 5, 5, Format::Png),
            Err(JobError::Fatal(_))
        ));
        let small = ImageLimits {
            max_side: 50,
            ..ImageLimits::default()
        };
        match resize(&png(80, 40), small, 5, 5, Format::Png) {
            Err(JobError::Fatal(m)) => assert!(m.contains("exceeds the decoder limits"), "{m}"),
            _ => panic!("an image over the limits must be refused"),
        }
    }

    #[test]
    fn thumbnail_ids_are_stable_per_job() {
        let j = Uuid::now_v7();
        assert_eq!(thumbnail_id(j), thumbnail_id(j));
        assert_ne!(thumbnail_id(j), thumbnail_id(Uuid::now_v7()));
    }
}
