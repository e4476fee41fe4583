//! Borrowed views of flat buffers together with their shape, so that a call says what it passes:
//! `resize_box(image, region, size)` instead of `resize_box(&data, w, h, x0, y0, ...)`.
//!
//! - [`Batch`] (and [`RgbBatch`]): `n` images of `height x width` pixels with 3 values each, in
//!   `[n, h, w, 3]` (RGB bytes) or `[n, 3, h, w]` (tensors) order;
//! - [`RgbImage`]: one non-empty packed RGB image; [`Mask`]: one boolean image;
//! - [`Matrix`]: `rows x cols` values, row-major (embeddings);
//! - [`Size`], [`Window`] (a box of whole pixels) and [`SourceBox`] (a continuous box).
//!
//! The constructors check the buffer length against the shape (overflow included) and name the
//! argument in the error, once, where the view is made; the kernels then trust the view.

use crate::error::{Error, Result};

/// Width and height of an image, in pixels.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Size {
    pub width: usize,
    pub height: usize,
}

impl Size {
    /// Number of pixels, or `None` on overflow.
    pub fn pixels(self) -> Option<usize> {
        self.width.checked_mul(self.height)
    }
}

/// A box of whole pixels: top-left pixel `(x, y)` (column, row; it may lie outside the image)
/// and its size.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Window {
    pub x: i64,
    pub y: i64,
    pub width: usize,
    pub height: usize,
}

/// A continuous box in pixel coordinates (pixel `j` covers `[j, j + 1)`): left, top, width,
/// height.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SourceBox {
    pub x: f64,
    pub y: f64,
    pub width: f64,
    pub height: f64,
}

/// The shape of a batch: `n` images of `height x width` pixels, 3 values per pixel.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BatchShape {
    pub n: usize,
    pub height: usize,
    pub width: usize,
}

/// `n` images of `height x width` pixels with 3 values each, borrowed: `[n, h, w, 3]` for RGB
/// bytes, `[n, 3, h, w]` for tensors (the shape is the same, the kernel knows the order).
#[derive(Clone, Copy, Debug)]
pub struct Batch<'a, T> {
    data: &'a [T],
    shape: BatchShape,
    /// Values per image, `height * width * 3`.
    image_len: usize,
}

/// A batch of RGB images, uint8 `[n, h, w, 3]`.
pub type RgbBatch<'a> = Batch<'a, u8>;

impl<'a, T> Batch<'a, T> {
    /// Checks that `data` holds exactly `n * height * width * 3` values; errors name `arg`.
    pub fn new(arg: &'static str, data: &'a [T], shape: BatchShape) -> Result<Self> {
        let BatchShape { n, height, width } = shape;
        let pixels = height.checked_mul(width);
        let image_len = pixels.and_then(|p| p.checked_mul(3));
        let want = image_len.and_then(|v| v.checked_mul(n));
        let (Some(pixels), Some(image_len), Some(want)) = (pixels, image_len, want) else {
            return Err(Error::invalid(arg, "shape is too large"));
        };
        if data.len() != want {
            return Err(Error::invalid(
                arg,
                format!(
                    "expected {n} patches x {pixels} pixels x 3 channels = {want} values, got {}",
                    data.len()
                ),
            ));
        }
        Ok(Batch {
            data,
            shape,
            image_len,
        })
    }

    /// A batch of `n` images of `pixels` pixels each (any `height x width` with that area).
    pub fn of_pixels(arg: &'static str, data: &'a [T], n: usize, pixels: usize) -> Result<Self> {
        let shape = BatchShape {
            n,
            height: 1,
            width: pixels,
        };
        Batch::new(arg, data, shape)
    }

    /// The values, in the batch's order.
    pub fn data(&self) -> &'a [T] {
        self.data
    }

    /// The shape.
    pub fn shape(&self) -> BatchShape {
        self.shape
    }

    /// Number of images.
    pub fn len(&self) -> usize {
        self.shape.n
    }

    /// True when the batch has no image.
    pub fn is_empty(&self) -> bool {
        self.shape.n == 0
    }

    /// Pixels per image.
    pub fn pixels(&self) -> usize {
        self.image_len / 3
    }

    /// Values per image (`3 * pixels`).
    pub fn image_len(&self) -> usize {
        self.image_len
    }

    /// Image `i`, or `None` past the end.
    pub fn image(&self, i: usize) -> Option<&'a [T]> {
        let start = i.checked_mul(self.image_len)?;
        self.data.get(start..start.checked_add(self.image_len)?)
    }
}

/// One non-empty packed RGB image, uint8 `[height, width, 3]`.
#[derive(Clone, Copy, Debug)]
pub struct RgbImage<'a> {
    data: &'a [u8],
    size: Size,
}

impl<'a> RgbImage<'a> {
    /// Checks that the image has at least one pixel and that `data` holds exactly
    /// `width * height * 3` bytes; errors name `arg`.
    pub fn new(arg: &'static str, data: &'a [u8], size: Size) -> Result<Self> {
        let want = size.pixels().and_then(|p| p.checked_mul(3));
        if size.width == 0 || size.height == 0 || want != Some(data.len()) {
            return Err(Error::invalid(
                arg,
                format!(
                    "expected a non-empty packed RGB image of {} x {} pixels (width x height x 3 \
                     bytes), got {} bytes",
                    size.width,
                    size.height,
                    data.len()
                ),
            ));
        }
        Ok(RgbImage { data, size })
    }

    /// The bytes, row by row.
    pub fn data(&self) -> &'a [u8] {
        self.data
    }

    /// Width and height.
    pub fn size(&self) -> Size {
        self.size
    }
}

/// One non-empty boolean image, `[height, width]`.
#[derive(Clone, Copy, Debug)]
pub struct Mask<'a> {
    data: &'a [bool],
    size: Size,
}

impl<'a> Mask<'a> {
    /// Checks that the mask has at least one pixel and that `data` holds exactly
    /// `width * height` values; errors name `arg`.
    pub fn new(arg: &'static str, data: &'a [bool], size: Size) -> Result<Self> {
        if size.width == 0 || size.height == 0 || size.pixels() != Some(data.len()) {
            return Err(Error::invalid(
                arg,
                format!(
                    "expected a non-empty {} x {} mask (width x height values), got {} values",
                    size.width,
                    size.height,
                    data.len()
                ),
            ));
        }
        Ok(Mask { data, size })
    }

    /// The values, row by row.
    pub fn data(&self) -> &'a [bool] {
        self.data
    }

    /// Width and height.
    pub fn size(&self) -> Size {
        self.size
    }
}

/// `rows x cols` values, row-major.
#[derive(Clone, Copy, Debug)]
pub struct Matrix<'a> {
    data: &'a [f32],
    rows: usize,
    cols: usize,
}

impl<'a> Matrix<'a> {
    /// Checks that `data` holds exactly `rows * cols` values; errors name `arg`.
    pub fn new(arg: &'static str, data: &'a [f32], rows: usize, cols: usize) -> Result<Self> {
        let want = rows
            .checked_mul(cols)
            .ok_or_else(|| Error::invalid(arg, "is too large"))?;
        if data.len() != want {
            return Err(Error::invalid(
                arg,
                format!(
                    "has {} values, expected {rows} rows x {cols} columns",
                    data.len()
                ),
            ));
        }
        Ok(Matrix { data, rows, cols })
    }

    /// The values, row-major.
    pub fn data(&self) -> &'a [f32] {
        self.data
    }

    /// Number of rows.
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Number of columns.
    pub fn cols(&self) -> usize {
        self.cols
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batch_length_is_checked_without_overflow() {
        let message = |len: usize, n, pixels| {
            Batch::of_pixels("patches", &vec![0u8; len], n, pixels)
                .err()
                .map(|e| e.to_string())
        };
        let ok = Batch::of_pixels("patches", &[0u8; 24], 2, 4);
        assert_eq!(
            ok.map(|b| (b.len(), b.pixels(), b.image_len())).ok(),
            Some((2, 4, 12))
        );
        assert_eq!(
            message(23, 2, 4).as_deref(),
            Some("patches: expected 2 patches x 4 pixels x 3 channels = 24 values, got 23")
        );
        assert_eq!(
            message(0, usize::MAX, 2).as_deref(),
            Some("patches: shape is too large")
        );
    }

    #[test]
    fn images_of_a_batch() -> Result<()> {
        let data: Vec<u8> = (0..2 * 2 * 3 * 3).map(|v| v as u8).collect();
        let shape = BatchShape {
            n: 2,
            height: 2,
            width: 3,
        };
        let batch = RgbBatch::new("patches", &data, shape)?;
        assert_eq!(batch.image(1), Some(&data[18..]));
        assert_eq!(batch.image(2), None);
        Ok(())
    }

    #[test]
    fn empty_or_short_images_are_refused() {
        let size = |width, height| Size { width, height };
        assert!(RgbImage::new("image", &[0u8; 12], size(2, 2)).is_ok());
        assert!(RgbImage::new("image", &[0u8; 11], size(2, 2)).is_err());
        assert!(RgbImage::new("image", &[], size(0, 2)).is_err());
        assert!(Mask::new("mask", &[true; 6], size(3, 2)).is_ok());
        assert!(Mask::new("mask", &[true; 6], size(6, 0)).is_err());
        assert!(Matrix::new("queries", &[0.0; 6], 2, 3).is_ok());
        let e = Matrix::new("queries", &[0.0; 5], 2, 3).err();
        assert_eq!(
            e.map(|e| e.to_string()).as_deref(),
            Some("queries: has 5 values, expected 2 rows x 3 columns")
        );
    }
}
