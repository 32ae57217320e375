"""Object-level editing: a scene, the edits on it, an editing session, local compositing, the server.

  ops          pure operations on (label, instance) id maps: masks from rect / circle / brush,
               hole filling, move / delete / resize / flip of one region
  scene        Scene (maps + one feature per region) and the pure edits that return a new Scene
  compositing  local edits: what an edit changed and the feathered blend into the last image
  window       local edits render a window around the change with the last full render's norm statistics
  session      EditSession: current scene and image, history, render, composite, swatches
  vocabulary   the JSON edit vocabulary (OPS), its parsing and dispatch, script export; Editor
               (an EditSession that takes typed calls, JSON edits and scripts)
  options      EditorOptions: what the editor reads from a run's config, read once
  server/      the interactive editor: a Starlette app, its codec and the page (static/)

The names most callers need are importable from here: `from pix2pixhd_jax.editing import Editor`.
"""
from pix2pixhd_jax.editing.scene import (Scene, add_object, check_rgb, check_vector, class_of, colour_feature,
                                         copy_feature, corrected_colour_feature, delete_instance, feature_colour,
                                         flip_instance, move_instance, new_instance_id, paint_region, relabel_instance,
                                         resize_instance, set_feature)
from pix2pixhd_jax.editing.session import EditResult, EditSession
from pix2pixhd_jax.editing.vocabulary import OPS, Editor
