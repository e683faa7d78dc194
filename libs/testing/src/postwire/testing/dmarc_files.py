"""DMARC report containers built in tests from report XML: a zip, a report mail with the report
attached. Shared by the parser's tests and the API's, so both feed the same shapes."""

from __future__ import annotations

import io
import zipfile
from email.message import EmailMessage


def zipped(data: bytes, name: str = "receiver.example!sender.example!1538352000!1538438399.xml") -> bytes:
    """``data`` as the one member of a zip, as reporters send it."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr(name, data)
    return buffer.getvalue()


def report_mail(attachment: bytes, subtype: str, filename: str,
                to: str = "dmarc-rua@sender.example") -> bytes:
    """A report mail as reporters write it: a short text and the report attached."""
    mail = EmailMessage()
    mail["From"] = "noreply-dmarc@receiver.example"
    mail["To"] = to
    mail["Subject"] = "Report Domain: sender.example Submitter: receiver.example Report-ID: <20181001.r1>"
    mail.set_content("This is a DMARC aggregate report.")
    mail.add_attachment(attachment, maintype="application", subtype=subtype, filename=filename)
    return mail.as_bytes()
