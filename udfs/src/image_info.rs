//! `image_info(bytes)`: format, size and colour type of an encoded image, from its header.

use std::io::Cursor;
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, StringBuilder, StructArray, UInt32Builder};
use arrow::buffer::NullBuffer;
use arrow::datatypes::{DataType, Field, Fields};
use datafusion::common::{exec_err, plan_err, Result, ScalarValue};
use datafusion::logical_expr::{
    ColumnarValue, ScalarFunctionArgs, ScalarUDFImpl, Signature, Volatility,
};
use image::{ColorType, ImageDecoder, ImageFormat, ImageReader};

/// What an image header says about the image.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ImageInfo {
    /// Container format, detected from the magic bytes.
    pub format: ImageFormat,
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
    /// Pixel layout the decoder would produce.
    pub color_type: ColorType,
}

impl ImageInfo {
    /// Lower-case format name as `image_info` reports it: `png`, `jpeg`, `webp`, `gif`, `bmp`,
    /// `tiff`, ...
    pub fn format_name(&self) -> String {
        match self.format {
            ImageFormat::Png => "png".into(),
            ImageFormat::Jpeg => "jpeg".into(),
            ImageFormat::WebP => "webp".into(),
            ImageFormat::Gif => "gif".into(),
            ImageFormat::Bmp => "bmp".into(),
            ImageFormat::Tiff => "tiff".into(),
            other => format!("{other:?}").to_lowercase(),
        }
    }

    /// Lower-case colour type name as `image_info` reports it: `l8` (grey), `la8` (grey and
    /// alpha), `rgb8`, `rgba8`, their 16-bit forms `l16` ... `rgba16`, and `rgb32f`, `rgba32f`.
    pub fn color_type_name(&self) -> String {
        match self.color_type {
            ColorType::L8 => "l8".into(),
            ColorType::La8 => "la8".into(),
            ColorType::Rgb8 => "rgb8".into(),
            ColorType::Rgba8 => "rgba8".into(),
            ColorType::L16 => "l16".into(),
            ColorType::La16 => "la16".into(),
            ColorType::Rgb16 => "rgb16".into(),
            ColorType::Rgba16 => "rgba16".into(),
            ColorType::Rgb32F => "rgb32f".into(),
            ColorType::Rgba32F => "rgba32f".into(),
            other => format!("{other:?}").to_lowercase(),
        }
    }
}

/// Reads the header of an encoded image (PNG, JPEG, WebP, GIF, BMP or TIFF) without decoding
/// its pixels. Returns `None` for anything that is not a readable image of those formats:
/// garbage, empty or truncated bytes.
///
/// ```
/// use cliptta_udfs::image_info;
/// assert_eq!(image_info(b"definitely not an image"), None);
/// ```
pub fn image_info(bytes: &[u8]) -> Option<ImageInfo> {
    // Header parsers see arbitrary bytes from the lake; a bug in one must cost a null, not the
    // query, so a panic is contained here.
    std::panic::catch_unwind(|| read_header(bytes))
        .ok()
        .flatten()
}

fn read_header(bytes: &[u8]) -> Option<ImageInfo> {
    let reader = ImageReader::new(Cursor::new(bytes))
        .with_guessed_format()
        .ok()?;
    let format = reader.format()?;
    // Building the format's decoder parses the header only; pixels are read by `decode`.
    let decoder = reader.into_decoder().ok()?;
    let (width, height) = decoder.dimensions();
    Some(ImageInfo {
        format,
        width,
        height,
        color_type: decoder.color_type(),
    })
}

/// SQL scalar function `image_info(bytes) -> STRUCT<format, width, height, color_type>`, see
/// [`image_info()`].
///
/// `bytes` is a binary column (e.g. the `content` of an image lake listing). The result is a
/// struct of `format` (string), `width` and `height` (unsigned 32-bit integers) and
/// `color_type` (string), or null, without an error, for null or non-image bytes.
///
/// ```sql
/// SELECT image_info(content)['format'] AS format, image_info(content)['width'] AS width
/// FROM images;
/// -- +--------+-------+
/// -- | format | width |
/// -- +--------+-------+
/// -- | png    | 224   |
/// -- | jpeg   | 640   |
/// -- |        |       |
/// -- +--------+-------+
/// ```
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct ImageInfoUdf {
    signature: Signature,
}

impl ImageInfoUdf {
    /// Creates the function; register it with `ctx.register_udf(ScalarUDF::from(ImageInfoUdf::new()))`.
    pub fn new() -> Self {
        Self {
            signature: Signature::user_defined(Volatility::Immutable),
        }
    }

    /// Fields of the returned struct.
    pub fn fields() -> Fields {
        Fields::from(vec![
            Field::new("format", DataType::Utf8, true),
            Field::new("width", DataType::UInt32, true),
            Field::new("height", DataType::UInt32, true),
            Field::new("color_type", DataType::Utf8, true),
        ])
    }
}

impl Default for ImageInfoUdf {
    fn default() -> Self {
        Self::new()
    }
}

impl ScalarUDFImpl for ImageInfoUdf {
    fn name(&self) -> &str {
        "image_info"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn coerce_types(&self, arg_types: &[DataType]) -> Result<Vec<DataType>> {
        let name = self.name();
        match arg_types {
            [DataType::Binary | DataType::LargeBinary | DataType::BinaryView] => {
                Ok(arg_types.to_vec())
            }
            [DataType::Null | DataType::FixedSizeBinary(_)] => Ok(vec![DataType::Binary]),
            [other] => plan_err!("{name}: bytes must be binary, got {other}"),
            _ => plan_err!(
                "{name} takes 1 argument: image_info(bytes), got {} argument(s)",
                arg_types.len()
            ),
        }
    }

    fn return_type(&self, _arg_types: &[DataType]) -> Result<DataType> {
        Ok(DataType::Struct(Self::fields()))
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let [input] = args.args.as_slice() else {
            return exec_err!("image_info: expected 1 argument, got {}", args.args.len());
        };
        let all_scalar = matches!(input, ColumnarValue::Scalar(_));
        let array = input.to_array(args.number_rows)?;
        let infos: Vec<Option<ImageInfo>> = match array.data_type() {
            DataType::Binary => array
                .as_binary::<i32>()
                .iter()
                .map(|b| b.and_then(image_info))
                .collect(),
            DataType::LargeBinary => array
                .as_binary::<i64>()
                .iter()
                .map(|b| b.and_then(image_info))
                .collect(),
            DataType::BinaryView => array
                .as_binary_view()
                .iter()
                .map(|b| b.and_then(image_info))
                .collect(),
            DataType::Null => vec![None; array.len()],
            other => return exec_err!("image_info: unsupported argument type {other}"),
        };
        let result = build_struct(&infos);
        if all_scalar {
            Ok(ColumnarValue::Scalar(ScalarValue::try_from_array(
                &result, 0,
            )?))
        } else {
            Ok(ColumnarValue::Array(result))
        }
    }
}

fn build_struct(infos: &[Option<ImageInfo>]) -> ArrayRef {
    let mut format = StringBuilder::new();
    let mut width = UInt32Builder::with_capacity(infos.len());
    let mut height = UInt32Builder::with_capacity(infos.len());
    let mut color_type = StringBuilder::new();
    for info in infos {
        format.append_option(info.map(|i| i.format_name()));
        width.append_option(info.map(|i| i.width));
        height.append_option(info.map(|i| i.height));
        color_type.append_option(info.map(|i| i.color_type_name()));
    }
    let nulls = NullBuffer::from(infos.iter().map(Option::is_some).collect::<Vec<_>>());
    Arc::new(StructArray::new(
        ImageInfoUdf::fields(),
        vec![
            Arc::new(format.finish()),
            Arc::new(width.finish()),
            Arc::new(height.finish()),
            Arc::new(color_type.finish()),
        ],
        Some(nulls),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::codecs::png::PngEncoder;
    use image::{ExtendedColorType, ImageEncoder};

    fn png(width: u32, height: u32, color: ExtendedColorType, channels: usize) -> Vec<u8> {
        let mut out = Vec::new();
        let pixels = vec![7u8; width as usize * height as usize * channels];
        PngEncoder::new(&mut out)
            .write_image(&pixels, width, height, color)
            .expect("encode png");
        out
    }

    #[test]
    fn reads_png_header() {
        let info = image_info(&png(5, 3, ExtendedColorType::Rgba8, 4)).expect("png");
        assert_eq!(
            (info.format_name().as_str(), info.width, info.height),
            ("png", 5, 3)
        );
        assert_eq!(info.color_type_name(), "rgba8");
        let grey = image_info(&png(2, 9, ExtendedColorType::L8, 1)).expect("png");
        assert_eq!(
            (grey.width, grey.height, grey.color_type_name().as_str()),
            (2, 9, "l8")
        );
    }

    #[test]
    fn pixels_are_not_decoded() {
        // Cut the PNG just inside its image data: a full decode fails, the header still reads.
        let bytes = png(64, 48, ExtendedColorType::Rgb8, 3);
        let idat = bytes
            .windows(4)
            .position(|w| w == b"IDAT")
            .expect("IDAT chunk");
        let truncated = &bytes[..idat + 4 + 2];
        assert!(image::load_from_memory(truncated).is_err());
        let info = image_info(truncated).expect("header");
        assert_eq!((info.width, info.height), (64, 48));
    }

    #[test]
    fn non_images_are_none() {
        assert_eq!(image_info(b""), None);
        assert_eq!(image_info(b"GIF89a"), None);
        assert_eq!(image_info(&[0u8; 100]), None);
        assert_eq!(
            image_info(b"\x89PNG\r\n\x1a\n garbage after the magic"),
            None
        );
    }

    #[test]
    fn struct_is_null_where_input_is_not_an_image() {
        let bytes = png(1, 1, ExtendedColorType::Rgb8, 3);
        let infos = vec![image_info(&bytes), None];
        let array = build_struct(&infos);
        assert_eq!(array.len(), 2);
        assert!(array.is_valid(0));
        assert!(array.is_null(1));
    }

    #[test]
    fn rejects_non_binary_arguments_by_name() {
        let udf = ImageInfoUdf::new();
        let msg = udf
            .coerce_types(&[DataType::Int32])
            .map(|_| String::new())
            .unwrap_or_else(|e| e.to_string());
        assert!(msg.contains("image_info"), "{msg}");
        let msg = udf
            .coerce_types(&[])
            .map(|_| String::new())
            .unwrap_or_else(|e| e.to_string());
        assert!(msg.contains("image_info"), "{msg}");
    }
}
