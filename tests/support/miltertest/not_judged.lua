-- Sessions that are never judged: IPv4, IPv4-mapped IPv6, authenticated
-- submission ({auth_authen} set). They are accepted and nothing is added or
-- changed. With READ_BODY=yes (IPv4 with [greenlist] history on, the default)
-- the milter asks for the body, to learn the From domain in the background;
-- otherwise it accepts at end of headers and never asks for the body.
dofile(DIR .. "/common.lua")

run("not_judged", function()
  local conn = sendmail_connect()
  sendmail_envelope(conn)
  ok(mt.eoh(conn), "eoh")
  if READ_BODY == "yes" then
    expect_reply(conn, SMFIR_CONTINUE, "eoh")
    ok(mt.bodystring(conn, "Hello.\r\n"), "body")
    ok(mt.eom(conn), "eom")
    expect_reply(conn, SMFIR_ACCEPT, "eom")
    if mt.eom_check(conn, MT_HDRINSERT) or mt.eom_check(conn, MT_HDRADD)
        or mt.eom_check(conn, MT_HDRCHANGE) or mt.eom_check(conn, MT_HDRDELETE) then
      fail("eom: a header was added or changed in mail that is not judged")
    end
  else
    expect_reply(conn, SMFIR_ACCEPT, "eoh")
  end
  ok(mt.disconnect(conn), "disconnect")
end)
