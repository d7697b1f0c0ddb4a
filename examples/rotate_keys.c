/* SPDX-License-Identifier: MPL-2.0 */
/* Rotating streamcrypt keys from a C application.
 *
 * A live VP8 stream goes through streamencrypt and streamdecrypt while a second
 * thread installs a new key every 100 ms: first on the decrypter (add-key), then
 * on the encrypter (set-key). The decrypter's stats must show every frame
 * decrypted, one key switch per rotation and nothing dropped.
 *
 * Build: cc rotate_keys.c $(pkg-config --cflags --libs gstreamer-1.0) -o rotate_keys
 * Run:   GST_PLUGIN_PATH=target/release ./rotate_keys
 */
#include <gst/gst.h>
#include <stdio.h>

#define FRAMES 200

static volatile gint done;

static gchar *
random_key (void)
{
  GString *hex = g_string_new (NULL);
  for (int i = 0; i < 16; i++)
    g_string_append_printf (hex, "%02x", g_random_int_range (0, 256));
  return g_string_free (hex, FALSE);
}

static gpointer
rotate (gpointer data)
{
  GstElement **elements = data;
  guint64 kid = 1;

  while (!g_atomic_int_get (&done)) {
    g_usleep (100 * 1000);
    gchar *key = random_key ();
    gboolean accepted = FALSE;
    kid++;
    g_signal_emit_by_name (elements[1], "add-key", kid, key, &accepted);
    if (accepted)
      g_signal_emit_by_name (elements[0], "set-key", kid, key, &accepted);
    g_free (key);
    if (!accepted) {
      g_printerr ("key %" G_GUINT64_FORMAT " refused\n", kid);
      return GINT_TO_POINTER (1);
    }
  }
  return NULL;
}

int
main (int argc, char **argv)
{
  GError *error = NULL;
  gst_init (&argc, &argv);

  gchar *key = random_key ();
  gchar *description = g_strdup_printf ("videotestsrc is-live=true num-buffers=%d "
      "! video/x-raw,width=160,height=120,framerate=100/1 ! vp8enc deadline=1 "
      "! streamencrypt name=enc key-id=1 key=%s "
      "! streamdecrypt name=dec key-id=1 key=%s ! fakesink", FRAMES, key, key);
  GstElement *pipeline = gst_parse_launch (description, &error);
  g_free (description);
  g_free (key);
  if (!pipeline) {
    g_printerr ("%s\n", error->message);
    return 1;
  }
  GstElement *elements[2] = {
    gst_bin_get_by_name (GST_BIN (pipeline), "enc"),
    gst_bin_get_by_name (GST_BIN (pipeline), "dec"),
  };

  gst_element_set_state (pipeline, GST_STATE_PLAYING);
  GThread *rotator = g_thread_new ("rotator", rotate, elements);
  GstBus *bus = gst_element_get_bus (pipeline);
  GstMessage *message = gst_bus_timed_pop_filtered (bus, GST_CLOCK_TIME_NONE,
      GST_MESSAGE_EOS | GST_MESSAGE_ERROR);
  g_atomic_int_set (&done, 1);
  gboolean rotation_failed = g_thread_join (rotator) != NULL;

  int status = 0;
  if (GST_MESSAGE_TYPE (message) == GST_MESSAGE_ERROR) {
    gst_message_parse_error (message, &error, NULL);
    g_printerr ("pipeline error: %s\n", error->message);
    status = 1;
  }
  GstStructure *stats = NULL;
  g_object_get (elements[1], "stats", &stats, NULL);
  guint64 out = 0, switches = 0, dropped = 0;
  gst_structure_get_uint64 (stats, "buffers-out", &out);
  gst_structure_get_uint64 (stats, "key-switches", &switches);
  gst_structure_get_uint64 (stats, "dropped", &dropped);
  printf ("%" G_GUINT64_FORMAT "/%d frames decrypted, %" G_GUINT64_FORMAT
      " key switches, %" G_GUINT64_FORMAT " dropped\n", out, FRAMES, switches,
      dropped);
  if (rotation_failed || out != FRAMES || dropped != 0 || switches < 10)
    status = 1;

  gst_structure_free (stats);
  gst_message_unref (message);
  gst_object_unref (bus);
  gst_element_set_state (pipeline, GST_STATE_NULL);
  gst_object_unref (elements[0]);
  gst_object_unref (elements[1]);
  gst_object_unref (pipeline);
  return status;
}
