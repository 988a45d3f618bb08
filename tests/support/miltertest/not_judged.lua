-- Sessions that are never judged: IPv4, IPv4-mapped IPv6, authenticated
-- submission ({auth_authen} set). The milter accepts at end of headers and
-- never asks for the body; it adds and changes nothing.
dofile(DIR .. "/common.lua")

run("not_judged", function()
  local conn = sendmail_connect()
  sendmail_envelope(conn)
  ok(mt.eoh(conn), "eoh")
  expect_reply(conn, SMFIR_ACCEPT, "eoh")
  ok(mt.disconnect(conn), "disconnect")
end)
