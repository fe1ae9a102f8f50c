"""Images as a photo app reads them, through the one loader every path uses (training,
evaluation, the image cache, the retriever, the page): EXIF orientation, high bit depths,
float images, transparency, and bounds on pixels and aspect ratio that name the file."""
import numpy as np
import pytest
from PIL import Image

from ssn_plugin.datasets import LoadCIRImages
from ssn_plugin.datasets.image_cache import preprocess
from ssn_plugin.image_io import ImageTooLarge, as_rgb_image, read_image


def load(path) -> np.ndarray:
    """What training reads: LoadCIRImages' RGB image as an array."""
    return np.asarray(LoadCIRImages(keys=('img', ))(dict(img_path=str(path)))['img'])


def test_exif_orientation_is_applied(tmp_path):
    """A 'phone photo': stored 40 x 20 (left red, right blue) with orientation 6 (rotate 90
    degrees clockwise to show), so a viewer shows it 20 wide, 40 high, red on top."""
    array = np.zeros((20, 40, 3), np.uint8)
    array[:, :20] = (255, 0, 0)
    array[:, 20:] = (0, 0, 255)
    image = Image.fromarray(array)
    exif = image.getexif()
    exif[0x0112] = 6
    image.save(tmp_path / 'phone.png', exif=exif)
    shown = load(tmp_path / 'phone.png')
    assert shown.shape == (40, 20, 3)
    assert tuple(shown[2, 10]) == (255, 0, 0) and tuple(shown[-3, 10]) == (0, 0, 255)


@pytest.mark.parametrize('mode, value, expected', [
    ('I;16', 32768, 127),      # 16-bit PNG, half scale: mid grey, not white
    ('I;16', 65535, 255),
    ('I', 65535 // 4, 63),     # 32-bit integer holding 16-bit data
])
def test_high_bit_depths_are_scaled_to_8_bits(tmp_path, mode, value, expected):
    dtype = np.uint16 if mode == 'I;16' else np.int32
    Image.fromarray(np.full((8, 8), value, dtype), mode=mode).save(tmp_path / 'deep.png')
    assert set(load(tmp_path / 'deep.png').reshape(-1).tolist()) == {expected}


def test_an_in_memory_32_bit_image_of_8_bit_values_keeps_them():
    image = Image.fromarray(np.full((4, 4), 100, np.int32), mode='I')
    assert set(np.asarray(as_rgb_image(image)).reshape(-1).tolist()) == {100}


@pytest.mark.parametrize('value, expected', [(0.5, 128), (1.0, 255), (0.0, 0), (200.0, 200)])
def test_float_images_are_read_from_unit_range_or_clipped(tmp_path, value, expected):
    Image.fromarray(np.full((8, 8), value, np.float32), mode='F').save(tmp_path / 'f.tif')
    assert set(load(tmp_path / 'f.tif').reshape(-1).tolist()) == {expected}


def test_transparency_is_composited_over_white(tmp_path):
    rgba = np.zeros((8, 8, 4), np.uint8)  # black, fully transparent ...
    rgba[:4, :, :] = (0, 200, 0, 255)     # ... but for an opaque green top half
    Image.fromarray(rgba, 'RGBA').save(tmp_path / 'alpha.png')
    shown = load(tmp_path / 'alpha.png')
    assert tuple(shown[0, 0]) == (0, 200, 0) and tuple(shown[-1, 0]) == (255, 255, 255)


def test_too_many_pixels_and_strips_are_refused_by_name(tmp_path):
    Image.new('1', (9000, 9000)).save(tmp_path / 'bomb.png')
    Image.new('RGB', (200000, 1)).save(tmp_path / 'strip.png')  # 661 bytes of PNG
    with pytest.raises(ImageTooLarge, match=r'bomb\.png: the image is 9000x9000 = 81,000,000'):
        load(tmp_path / 'bomb.png')
    with pytest.raises(ImageTooLarge, match=r'strip\.png: .*aspect ratio over 50:1'):
        load(tmp_path / 'strip.png')


def test_a_broken_file_names_itself(tmp_path):
    (tmp_path / 'broken.png').write_bytes(b'\x89PNG\r\n\x1a\nnot really')
    with pytest.raises(OSError, match=r'cannot read image .*broken\.png'):
        load(tmp_path / 'broken.png')


def test_every_path_reads_the_same_pixels(tmp_path):
    """The image cache's preprocessing and the in-memory path (uploads, PIL queries) give
    what training reads."""
    image = Image.fromarray(np.full((6, 10), 40000, np.uint16), mode='I;16')
    image.save(tmp_path / 'deep.png')
    trained = load(tmp_path / 'deep.png')
    assert np.array_equal(preprocess(str(tmp_path / 'deep.png'),
                                     [LoadCIRImages(keys=('img', ))]), trained)
    with Image.open(tmp_path / 'deep.png') as opened:
        assert np.array_equal(np.asarray(as_rgb_image(opened)), trained)
    assert np.array_equal(np.asarray(read_image(str(tmp_path / 'deep.png'))), trained)


@pytest.mark.parametrize('value, expected', [(300.0, 255), (-5.0, 0), (float('nan'), 0),
                                             (0.2, 51), (0.6, 153)])
def test_float_images_outside_the_unit_range_are_clipped(value, expected):
    """Values in [0, 1] scale by 255 (0.2 -> 51); others are taken as 0-255 and clipped."""
    image = Image.fromarray(np.full((4, 4), value, np.float32), mode='F')
    assert set(np.asarray(as_rgb_image(image)).reshape(-1).tolist()) == {expected}


def test_one_pixel_beyond_1_makes_a_float_image_0_255():
    array = np.full((4, 4), 0.2, np.float32)
    array[0, 0] = 2.0
    shown = np.asarray(as_rgb_image(Image.fromarray(array, mode='F')))
    assert shown[0, 0, 0] == 2 and set(shown[1:, 1:].reshape(-1).tolist()) == {0}


@pytest.mark.parametrize('mode, value, expected', [
    ('I', 70000, 255),   # beyond 16 bits: saturates
    ('I', 255, 255),     # at most 255: 8-bit data, kept
    ('I', 256, 0),       # above 255: 16-bit data, 256 / 65535 of white
    ('I', -5, 0),        # negative: clipped
    ('I', 0, 0),
    ('I;16', 0, 0),
    ('I;16', 255, 0),    # 16-bit data even when small: 255 / 65535 of white
])
def test_integer_images_are_scaled_by_their_bit_depth(mode, value, expected):
    dtype = np.uint16 if mode == 'I;16' else np.int32
    image = Image.fromarray(np.full((4, 4), value, dtype), mode=mode)
    assert set(np.asarray(as_rgb_image(image)).reshape(-1).tolist()) == {expected}


def test_negative_values_of_a_16_bit_range_are_clipped_not_wrapped():
    array = np.full((4, 4), 70000, np.int32)
    array[0, 0] = -70000
    shown = np.asarray(as_rgb_image(Image.fromarray(array, mode='I')))
    assert shown[0, 0, 0] == 0 and shown[1, 1, 0] == 255


def test_an_in_memory_image_over_the_bounds_says_so():
    with pytest.raises(ImageTooLarge, match=r'^an in-memory image: the image is 1x100 pixels'):
        as_rgb_image(Image.new('RGB', (1, 100)))
    with pytest.raises(ImageTooLarge, match=r'^upload\.png: the image is 1x100'):
        as_rgb_image(Image.new('RGB', (1, 100)), 'upload.png')


@pytest.mark.parametrize('mode', ['LA', 'PA', 'P'])
def test_every_kind_of_transparency_is_composited_over_white(mode):
    if mode == 'P':  # a palette image whose index 0 is transparent
        image = Image.new('P', (4, 4), 0)
        image.putpalette([0, 0, 0] * 256)
        image.info['transparency'] = 0
    elif mode == 'PA':  # built directly: Pillow 9.3's RGBA -> PA conversion drops alpha
        image = Image.new('PA', (4, 4), (0, 0))
        image.putpalette([0, 0, 0] * 256)
    else:
        image = Image.new('LA', (4, 4), (0, 0))
    shown = np.asarray(as_rgb_image(image))
    assert shown.shape == (4, 4, 3) and set(shown.reshape(-1).tolist()) == {255}


def test_an_rgb_image_comes_back_as_a_copy():
    original = Image.new('RGB', (4, 4), (10, 20, 30))
    shown = as_rgb_image(original)
    shown.putpixel((0, 0), (0, 0, 0))
    assert original.getpixel((0, 0)) == (10, 20, 30)


def test_a_path_and_an_open_image_read_alike(tmp_path):
    Image.fromarray(np.full((5, 7), 40000, np.uint16), mode='I;16').save(tmp_path / 'a.png')
    from_path = np.asarray(as_rgb_image(str(tmp_path / 'a.png')))
    assert from_path.shape == (5, 7, 3) and set(from_path.reshape(-1).tolist()) == {155}


def test_the_bounds_are_inclusive():
    from ssn_plugin.image_io import check_size
    check_size((100, 2), 'x', max_pixels=200, max_aspect=50.0)  # exactly at both bounds
    with pytest.raises(ImageTooLarge, match='201 pixels'):
        check_size((201, 1), 'x', max_pixels=200, max_aspect=1000.0)
    with pytest.raises(ImageTooLarge, match='aspect ratio over 50:1'):
        check_size((101, 2), 'x', max_pixels=1000, max_aspect=50.0)
    with pytest.raises(ImageTooLarge, match='has no pixels'):
        check_size((0, 5), 'x')
