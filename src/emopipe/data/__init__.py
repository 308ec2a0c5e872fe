"""The data stages' library: sources, intake, face cropping, duplicates, splits, oversampling, packed tensors, augmentation."""
