# The quick start on the hard variant of the shapes data (ssn_plugin/datasets/shapes_hard.py):
# four or five objects a scene, each image set's five variants made by one instruction family
# (removals of different objects, the same attribute changed on other objects or to other
# values, two-part instructions), so neither the image nor the text alone finds the target.
# Everything else is ./ssn_shapes.py's.
#   python tools/train.py configs/demo/ssn_shapes_hard.py
_base_ = ['./ssn_shapes.py']

data_root = 'data/shapes_hard'
generator = dict(seed=0, num_train_sets=3000, num_val_sets=500, queries_per_set=2,
                 image_size=64, difficulty='hard')
train_dataloader = dict(dataset=dict(data_root=data_root, generator=generator))
val_dataloader = dict(dataset=dict(data_root=data_root, generator=generator))
test_dataloader = val_dataloader
