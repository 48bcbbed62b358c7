//! The comparison as a PNG: for each workload, each proxy's requests per second relative to the
//! upstream directly (1.0 = no cost), as horizontal bars. Drawn into a pixel buffer with a
//! built-in 5×7 font, so the bench needs no font files or plotting stack.

use std::path::Path;

use super::report::Group;

const WIDTH: usize = 960;
const SCALE: usize = 2;
const BAR: usize = 22;
const LEFT: usize = 330;
const BACKGROUND: [u8; 3] = [255, 255, 255];
const INK: [u8; 3] = [30, 30, 30];
const GRID: [u8; 3] = [200, 200, 200];

fn colour(target: &str) -> [u8; 3] {
    match target {
        "MCA" => [31, 119, 180],
        "nginx" => [44, 160, 44],
        _ => [255, 127, 14],
    }
}

struct Canvas {
    pixels: Vec<u8>,
    height: usize,
}

impl Canvas {
    fn new(height: usize) -> Self {
        Self {
            pixels: BACKGROUND.repeat(WIDTH * height),
            height,
        }
    }

    fn rect(&mut self, x: usize, y: usize, w: usize, h: usize, rgb: [u8; 3]) {
        for row in y..(y + h).min(self.height) {
            for col in x..(x + w).min(WIDTH) {
                let at = (row * WIDTH + col) * 3;
                self.pixels[at..at + 3].copy_from_slice(&rgb);
            }
        }
    }

    /// Writes `text` (upper-cased) with its top-left corner at (x, y).
    fn text(&mut self, x: usize, y: usize, text: &str, rgb: [u8; 3]) {
        for (i, c) in text.to_uppercase().chars().enumerate() {
            let rows = glyph(c);
            for (r, bits) in rows.iter().enumerate() {
                for col in 0..5 {
                    if bits & (0x10 >> col) != 0 {
                        let px = x + (i * 6 + col) * SCALE;
                        self.rect(px, y + r * SCALE, SCALE, SCALE, rgb);
                    }
                }
            }
        }
    }
}

/// Draws `groups` into a PNG at `path`.
pub fn write(path: &Path, groups: &[Group]) -> anyhow::Result<()> {
    let max = groups
        .iter()
        .flat_map(|g| g.bars.iter().map(|(_, r)| *r))
        .fold(1.0_f64, f64::max)
        * 1.15;
    let plot = WIDTH - LEFT - 20;
    let x_of = |ratio: f64| LEFT + (ratio / max * plot as f64) as usize;
    let height = 70
        + groups
            .iter()
            .map(|g| 24 + g.bars.len() * (BAR + 6) + 16)
            .sum::<usize>();
    let mut canvas = Canvas::new(height);
    canvas.text(
        10,
        10,
        "requests/s relative to the upstream directly (1.0 = no cost)",
        INK,
    );
    let mut y = 50;
    for group in groups {
        canvas.text(10, y, &group.label, INK);
        y += 24;
        for (target, ratio) in &group.bars {
            canvas.text(30, y + 4, target, INK);
            canvas.rect(LEFT, y, x_of(*ratio) - LEFT, BAR, colour(target));
            canvas.text(x_of(*ratio) + 6, y + 4, &format!("{ratio:.2}"), INK);
            y += BAR + 6;
        }
        y += 16;
    }
    // The upstream's own rate, for reference.
    canvas.rect(x_of(1.0), 40, 1, height - 50, GRID);
    canvas.text(x_of(1.0) + 4, 40, "1.0", GRID);
    let file = std::io::BufWriter::new(std::fs::File::create(path)?);
    let mut encoder = png::Encoder::new(file, WIDTH as u32, height as u32);
    encoder.set_color(png::ColorType::Rgb);
    encoder.set_depth(png::BitDepth::Eight);
    encoder.write_header()?.write_image_data(&canvas.pixels)?;
    Ok(())
}

/// A 5×7 glyph: seven rows, the five low bits of each, leftmost first.
fn glyph(c: char) -> [u8; 7] {
    match c {
        'A' => [0x0E, 0x11, 0x11, 0x1F, 0x11, 0x11, 0x11],
        'B' => [0x1E, 0x11, 0x11, 0x1E, 0x11, 0x11, 0x1E],
        'C' => [0x0E, 0x11, 0x10, 0x10, 0x10, 0x11, 0x0E],
        'D' => [0x1E, 0x11, 0x11, 0x11, 0x11, 0x11, 0x1E],
        'E' => [0x1F, 0x10, 0x10, 0x1E, 0x10, 0x10, 0x1F],
        'F' => [0x1F, 0x10, 0x10, 0x1E, 0x10, 0x10, 0x10],
        'G' => [0x0E, 0x11, 0x10, 0x17, 0x11, 0x11, 0x0F],
        'H' => [0x11, 0x11, 0x11, 0x1F, 0x11, 0x11, 0x11],
        'I' => [0x0E, 0x04, 0x04, 0x04, 0x04, 0x04, 0x0E],
        'J' => [0x07, 0x02, 0x02, 0x02, 0x02, 0x12, 0x0C],
        'K' => [0x11, 0x12, 0x14, 0x18, 0x14, 0x12, 0x11],
        'L' => [0x10, 0x10, 0x10, 0x10, 0x10, 0x10, 0x1F],
        'M' => [0x11, 0x1B, 0x15, 0x15, 0x11, 0x11, 0x11],
        'N' => [0x11, 0x11, 0x19, 0x15, 0x13, 0x11, 0x11],
        'O' => [0x0E, 0x11, 0x11, 0x11, 0x11, 0x11, 0x0E],
        'P' => [0x1E, 0x11, 0x11, 0x1E, 0x10, 0x10, 0x10],
        'Q' => [0x0E, 0x11, 0x11, 0x11, 0x15, 0x12, 0x0D],
        'R' => [0x1E, 0x11, 0x11, 0x1E, 0x14, 0x12, 0x11],
        'S' => [0x0F, 0x10, 0x10, 0x0E, 0x01, 0x01, 0x1E],
        'T' => [0x1F, 0x04, 0x04, 0x04, 0x04, 0x04, 0x04],
        'U' => [0x11, 0x11, 0x11, 0x11, 0x11, 0x11, 0x0E],
        'V' => [0x11, 0x11, 0x11, 0x11, 0x11, 0x0A, 0x04],
        'W' => [0x11, 0x11, 0x11, 0x15, 0x15, 0x15, 0x0A],
        'X' => [0x11, 0x11, 0x0A, 0x04, 0x0A, 0x11, 0x11],
        'Y' => [0x11, 0x11, 0x11, 0x0A, 0x04, 0x04, 0x04],
        'Z' => [0x1F, 0x01, 0x02, 0x04, 0x08, 0x10, 0x1F],
        '0' => [0x0E, 0x11, 0x13, 0x15, 0x19, 0x11, 0x0E],
        '1' => [0x04, 0x0C, 0x04, 0x04, 0x04, 0x04, 0x0E],
        '2' => [0x0E, 0x11, 0x01, 0x02, 0x04, 0x08, 0x1F],
        '3' => [0x1F, 0x02, 0x04, 0x02, 0x01, 0x11, 0x0E],
        '4' => [0x02, 0x06, 0x0A, 0x12, 0x1F, 0x02, 0x02],
        '5' => [0x1F, 0x10, 0x1E, 0x01, 0x01, 0x11, 0x0E],
        '6' => [0x06, 0x08, 0x10, 0x1E, 0x11, 0x11, 0x0E],
        '7' => [0x1F, 0x01, 0x02, 0x04, 0x08, 0x08, 0x08],
        '8' => [0x0E, 0x11, 0x11, 0x0E, 0x11, 0x11, 0x0E],
        '9' => [0x0E, 0x11, 0x11, 0x0F, 0x01, 0x02, 0x0C],
        '.' => [0x00, 0x00, 0x00, 0x00, 0x00, 0x0C, 0x0C],
        ',' => [0x00, 0x00, 0x00, 0x00, 0x0C, 0x04, 0x08],
        '-' => [0x00, 0x00, 0x00, 0x1F, 0x00, 0x00, 0x00],
        '/' => [0x00, 0x01, 0x02, 0x04, 0x08, 0x10, 0x00],
        '(' => [0x02, 0x04, 0x08, 0x08, 0x08, 0x04, 0x02],
        ')' => [0x08, 0x04, 0x02, 0x02, 0x02, 0x04, 0x08],
        '=' => [0x00, 0x00, 0x1F, 0x00, 0x1F, 0x00, 0x00],
        ':' => [0x00, 0x0C, 0x0C, 0x00, 0x0C, 0x0C, 0x00],
        _ => [0; 7],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn draws_a_png_of_the_groups() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("chart.png");
        let groups = vec![Group {
            label: "GET one pod".into(),
            bars: vec![("MCA", 0.5), ("nginx", 0.4), ("kubectl proxy", 0.2)],
        }];
        write(&path, &groups).unwrap();
        let decoder =
            png::Decoder::new(std::io::BufReader::new(std::fs::File::open(&path).unwrap()));
        let reader = decoder.read_info().unwrap();
        assert_eq!(reader.info().width, WIDTH as u32);
        assert!(reader.info().height > 100);
    }
}
