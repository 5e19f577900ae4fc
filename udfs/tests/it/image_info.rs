//! `image_info` on real headers of every supported format, written by the `image` crate's own
//! encoders, and on bytes that are not images.

use std::io::Cursor;
use std::sync::Arc;

use arrow::array::{ArrayRef, BinaryArray, BinaryViewArray, LargeBinaryArray, RecordBatch};
use arrow::datatypes::{Field, Schema};
use cliptta_udfs::image_info;
use datafusion::datasource::MemTable;
use datafusion::prelude::SessionContext;
use image::{DynamicImage, ImageBuffer, ImageFormat, Luma, Rgb, Rgba};

use crate::support::{context, table};

fn encode(image: &DynamicImage, format: ImageFormat) -> Vec<u8> {
    let mut out = Cursor::new(Vec::new());
    image
        .write_to(&mut out, format)
        .unwrap_or_else(|e| panic!("encode {format:?}: {e}"));
    out.into_inner()
}

fn rgb(width: u32, height: u32) -> DynamicImage {
    DynamicImage::ImageRgb8(ImageBuffer::from_fn(width, height, |x, y| {
        Rgb([x as u8, y as u8, 99])
    }))
}

fn rgba(width: u32, height: u32) -> DynamicImage {
    DynamicImage::ImageRgba8(ImageBuffer::from_fn(width, height, |x, y| {
        Rgba([x as u8, y as u8, 9, 128])
    }))
}

fn grey(width: u32, height: u32) -> DynamicImage {
    DynamicImage::ImageLuma8(ImageBuffer::from_fn(width, height, |x, _| Luma([x as u8])))
}

fn grey16(width: u32, height: u32) -> DynamicImage {
    DynamicImage::ImageLuma16(ImageBuffer::from_fn(width, height, |x, y| {
        Luma([(x * y) as u16])
    }))
}

/// (name, bytes, format, width, height, colour type).
type Sample = (&'static str, Vec<u8>, &'static str, u32, u32, &'static str);

/// One sample per format, and several colour types.
fn samples() -> Vec<Sample> {
    vec![
        (
            "png rgb",
            encode(&rgb(17, 5), ImageFormat::Png),
            "png",
            17,
            5,
            "rgb8",
        ),
        (
            "png rgba",
            encode(&rgba(3, 30), ImageFormat::Png),
            "png",
            3,
            30,
            "rgba8",
        ),
        (
            "png grey",
            encode(&grey(8, 8), ImageFormat::Png),
            "png",
            8,
            8,
            "l8",
        ),
        (
            "png grey16",
            encode(&grey16(4, 6), ImageFormat::Png),
            "png",
            4,
            6,
            "l16",
        ),
        (
            "jpeg rgb",
            encode(&rgb(33, 21), ImageFormat::Jpeg),
            "jpeg",
            33,
            21,
            "rgb8",
        ),
        (
            "jpeg grey",
            encode(&grey(16, 9), ImageFormat::Jpeg),
            "jpeg",
            16,
            9,
            "l8",
        ),
        (
            "webp rgba",
            encode(&rgba(12, 7), ImageFormat::WebP),
            "webp",
            12,
            7,
            "rgba8",
        ),
        (
            "gif",
            encode(&rgba(10, 11), ImageFormat::Gif),
            "gif",
            10,
            11,
            "rgba8",
        ),
        (
            "bmp rgb",
            encode(&rgb(9, 4), ImageFormat::Bmp),
            "bmp",
            9,
            4,
            "rgb8",
        ),
        (
            "bmp rgba",
            encode(&rgba(2, 3), ImageFormat::Bmp),
            "bmp",
            2,
            3,
            "rgba8",
        ),
        (
            "tiff rgb",
            encode(&rgb(6, 13), ImageFormat::Tiff),
            "tiff",
            6,
            13,
            "rgb8",
        ),
    ]
}

#[test]
fn reads_every_supported_format() {
    for (name, bytes, format, width, height, color) in samples() {
        let info = image_info(&bytes).unwrap_or_else(|| panic!("{name}: no info"));
        assert_eq!(info.format_name(), format, "{name}");
        assert_eq!((info.width, info.height), (width, height), "{name}");
        assert_eq!(info.color_type_name(), color, "{name}");
    }
}

#[test]
fn non_images_are_none() {
    let png = encode(&rgb(4, 4), ImageFormat::Png);
    let garbage: Vec<Vec<u8>> = vec![
        Vec::new(),
        b"hello, world".to_vec(),
        vec![0xff; 64],
        // Right magic bytes, broken header.
        b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR".to_vec(),
        b"\xff\xd8\xff\xe0 not really a jpeg".to_vec(),
        b"RIFF\x10\0\0\0WEBPVP8 ".to_vec(),
        b"GIF89a".to_vec(),
        b"BM".to_vec(),
        png[..12].to_vec(),
    ];
    for bytes in garbage {
        assert_eq!(image_info(&bytes), None, "{bytes:?}");
    }
}

async fn run(ctx: &SessionContext, sql: &str) -> Vec<String> {
    table(ctx, sql).await.lines().map(str::to_string).collect()
}

fn register(ctx: &SessionContext, content: ArrayRef) {
    let schema = Arc::new(Schema::new(vec![Field::new(
        "content",
        content.data_type().clone(),
        true,
    )]));
    let batch = RecordBatch::try_new(schema.clone(), vec![content]).expect("batch");
    // Two partitions, to run the function on more than one batch.
    let (a, b) = (batch.slice(0, 3), batch.slice(3, batch.num_rows() - 3));
    let table = MemTable::try_new(schema, vec![vec![a], vec![b]]).expect("table");
    ctx.deregister_table("images").expect("deregister");
    ctx.register_table("images", Arc::new(table))
        .expect("register");
}

#[tokio::test]
async fn sql_on_binary_columns() {
    let ctx = context(1);
    let png = encode(&rgba(224, 100), ImageFormat::Png);
    let jpeg = encode(&rgb(640, 480), ImageFormat::Jpeg);
    let rows: Vec<Option<&[u8]>> = vec![Some(&png), Some(&jpeg), Some(b"garbage"), Some(b""), None];
    let expected = [
        "+--------+-------+--------+------------+",
        "| format | width | height | color_type |",
        "+--------+-------+--------+------------+",
        "| png    | 224   | 100    | rgba8      |",
        "| jpeg   | 640   | 480    | rgb8       |",
        "|        |       |        |            |",
        "|        |       |        |            |",
        "|        |       |        |            |",
        "+--------+-------+--------+------------+",
    ];
    let query = "SELECT i['format'] AS format, i['width'] AS width, i['height'] AS height, \
                 i['color_type'] AS color_type \
                 FROM (SELECT image_info(content) AS i FROM images)";
    let columns: Vec<ArrayRef> = vec![
        Arc::new(BinaryArray::from(rows.clone())),
        Arc::new(LargeBinaryArray::from(rows.clone())),
        Arc::new(BinaryViewArray::from(rows.clone())),
    ];
    for content in columns {
        let data_type = content.data_type().clone();
        register(&ctx, content);
        let got = run(&ctx, query).await;
        // Row order across partitions is not guaranteed; compare as sets of rows.
        let mut got_rows = got[3..got.len() - 1].to_vec();
        let mut want_rows: Vec<String> = expected[3..expected.len() - 1]
            .iter()
            .map(|s| s.to_string())
            .collect();
        got_rows.sort();
        want_rows.sort();
        assert_eq!(
            got[..3],
            expected[..3]
                .iter()
                .map(|s| s.to_string())
                .collect::<Vec<_>>(),
            "{data_type}"
        );
        assert_eq!(got_rows, want_rows, "{data_type}");
    }

    let got = run(&ctx, "SELECT image_info(content) IS NULL AS missing, count(*) AS n FROM images GROUP BY 1 ORDER BY 1").await;
    assert_eq!(got[3], "| false   | 2 |");
    assert_eq!(got[4], "| true    | 3 |");
}

#[tokio::test]
async fn sql_on_literals_and_nulls() {
    let ctx = context(1);
    let got = run(&ctx, "SELECT image_info(X'00010203') IS NULL AS a, image_info(NULL) IS NULL AS b, image_info(X'') IS NULL AS c").await;
    assert_eq!(got[3], "| true | true | true |");
    let got = run(&ctx, "SELECT arrow_typeof(image_info(X'00')) AS t").await;
    assert!(
        got[3].contains("format") && got[3].contains("UInt32"),
        "{got:?}"
    );
}
