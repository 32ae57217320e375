"""Image-quality evaluation: FID/KID (InceptionV3 pool3), LPIPS (VGG16), segmentation score."""
