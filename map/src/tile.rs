//! 512x512 RGBA tiles: PNG encoding (deterministic: same pixels, same bytes), decoding, and the 2x
//! downscale used by the zoom pyramid.

use std::io::Cursor;

/// Pixels along a tile's side.
pub const SIZE: usize = 512;

#[derive(Clone, PartialEq, Eq)]
pub struct Tile {
    /// Row-major RGBA.
    pub rgba: Vec<u8>,
}

impl std::fmt::Debug for Tile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Tile({} bytes)", self.rgba.len())
    }
}

impl Tile {
    /// A fully transparent tile.
    pub fn empty() -> Self {
        Self {
            rgba: vec![0; SIZE * SIZE * 4],
        }
    }

    #[inline]
    pub fn set(&mut self, x: usize, y: usize, px: [u8; 4]) {
        let i = (y * SIZE + x) * 4;
        self.rgba[i..i + 4].copy_from_slice(&px);
    }

    #[inline]
    pub fn get(&self, x: usize, y: usize) -> [u8; 4] {
        let i = (y * SIZE + x) * 4;
        [
            self.rgba[i],
            self.rgba[i + 1],
            self.rgba[i + 2],
            self.rgba[i + 3],
        ]
    }

    pub fn is_empty(&self) -> bool {
        self.rgba.chunks_exact(4).all(|p| p[3] == 0)
    }

    pub fn encode(&self) -> Result<Vec<u8>, png::EncodingError> {
        let mut out = Vec::with_capacity(256 * 1024);
        {
            let mut enc = png::Encoder::new(&mut out, SIZE as u32, SIZE as u32);
            enc.set_color(png::ColorType::Rgba);
            enc.set_depth(png::BitDepth::Eight);
            enc.set_compression(png::Compression::Fast);
            let mut w = enc.write_header()?;
            w.write_image_data(&self.rgba)?;
            w.finish()?;
        }
        Ok(out)
    }

    /// Decode a tile this module wrote (8-bit RGBA, 512x512).
    pub fn decode(bytes: &[u8]) -> Result<Self, String> {
        let dec = png::Decoder::new(Cursor::new(bytes));
        let mut reader = dec.read_info().map_err(|e| e.to_string())?;
        let info = reader.info();
        if info.width as usize != SIZE
            || info.height as usize != SIZE
            || info.color_type != png::ColorType::Rgba
            || info.bit_depth != png::BitDepth::Eight
        {
            return Err(format!(
                "not a 512x512 8-bit RGBA tile ({}x{} {:?} {:?})",
                info.width, info.height, info.color_type, info.bit_depth
            ));
        }
        let mut rgba = vec![0; SIZE * SIZE * 4];
        reader.next_frame(&mut rgba).map_err(|e| e.to_string())?;
        Ok(Self { rgba })
    }

    /// Draw `child` shrunk by half into quadrant (`qx`, `qz`) (each 0 or 1). Each output pixel is
    /// the alpha-weighted mean of a 2x2 block, so transparent pixels do not darken edges.
    pub fn draw_half(&mut self, child: &Tile, qx: usize, qz: usize) {
        let half = SIZE / 2;
        for y in 0..half {
            for x in 0..half {
                let mut sum = [0u32; 3];
                let mut alpha = 0u32;
                for (dx, dy) in [(0, 0), (1, 0), (0, 1), (1, 1)] {
                    let p = child.get(2 * x + dx, 2 * y + dy);
                    let a = u32::from(p[3]);
                    alpha += a;
                    for c in 0..3 {
                        sum[c] += u32::from(p[c]) * a;
                    }
                }
                let px = if alpha == 0 {
                    [0, 0, 0, 0]
                } else {
                    let avg = |s: u32| ((s + alpha / 2) / alpha) as u8;
                    [
                        avg(sum[0]),
                        avg(sum[1]),
                        avg(sum[2]),
                        ((alpha + 2) / 4) as u8,
                    ]
                };
                self.set(qx * half + x, qz * half + y, px);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn png_roundtrip_and_deterministic() {
        let mut t = Tile::empty();
        t.set(3, 4, [1, 2, 3, 255]);
        let a = t.encode().unwrap();
        assert_eq!(a, t.encode().unwrap());
        assert_eq!(Tile::decode(&a).unwrap(), t);
        assert!(Tile::decode(b"not a png").is_err());
    }

    #[test]
    fn half_averages_with_alpha() {
        let mut child = Tile::empty();
        child.set(0, 0, [200, 100, 0, 255]);
        child.set(1, 0, [100, 50, 0, 255]);
        let mut parent = Tile::empty();
        parent.draw_half(&child, 1, 0);
        // Two opaque pixels of four: colour is their mean, alpha half.
        assert_eq!(parent.get(256, 0), [150, 75, 0, 128]);
        assert_eq!(parent.get(0, 0), [0, 0, 0, 0]);
    }
}
