package ptable

import "strings"

// TypeName names a partition type as fdisk and gdisk do ("EFI System",
// "Linux filesystem", "Microsoft basic data"): typ is a GPT type GUID or
// an MBR type byte written "0x83". An unknown type gives "".
func TypeName(typ string) string {
	if strings.HasPrefix(typ, "0x") {
		return mbrNames[strings.ToLower(typ)]
	}
	return gptNames[strings.ToUpper(typ)]
}

// Fits says whether a partition of type typ may hold the filesystem fs
// (a name as Platter's detectors give it: "ext4", "fat32", "swap",
// "lvm2", "luks2", ...). Only the types that promise one kind of contents
// are judged: swap, LVM, LUKS, the EFI system partition and the MBR FAT
// and NTFS types; every other type fits anything.
func Fits(typ, fs string) bool {
	want, ok := promises[TypeName(typ)]
	if !ok {
		return true
	}
	for _, w := range strings.Split(want, " ") {
		if strings.HasPrefix(fs, w) {
			return true
		}
	}
	return false
}

// promises maps a type's name to the prefixes of the filesystems it may
// hold.
var promises = map[string]string{
	"EFI System":           "fat",
	"EFI (FAT-12/16/32)":   "fat",
	"Linux swap":           "swap",
	"Linux swap / Solaris": "swap",
	"Linux LVM":            "lvm",
	"Linux LUKS":           "luks",
	"FAT12":                "fat",
	"FAT16 <32M":           "fat",
	"FAT16":                "fat",
	"W95 FAT32":            "fat",
	"W95 FAT32 (LBA)":      "fat",
	"W95 FAT16 (LBA)":      "fat",
	"HPFS/NTFS/exFAT":      "ntfs exfat",
}

// The types people meet on PCs, Macs and servers (util-linux's
// libfdisk tables, abridged).
var gptNames = map[string]string{
	"C12A7328-F81F-11D2-BA4B-00A0C93EC93B": "EFI System",
	"21686148-6449-6E6F-744E-656564454649": "BIOS boot",
	"024DEE41-33E7-11D3-9D69-0008C781F39F": "MBR partition scheme",
	"E3C9E316-0B5C-4DB8-817D-F92DF00215AE": "Microsoft reserved",
	"EBD0A0A2-B9E5-4433-87C0-68B6B72699C7": "Microsoft basic data",
	"DE94BBA4-06D1-4D40-A16A-BFD50179D6AC": "Windows recovery environment",
	"5808C8AA-7E8F-42E0-85D2-E1E90434CFB3": "Microsoft LDM metadata",
	"AF9B60A0-1431-4F62-BC68-3311714A69AD": "Microsoft LDM data",
	"E75CAF8F-F680-4CEE-AFA3-B001E56EFC2D": "Microsoft Storage Spaces",
	"0FC63DAF-8483-4772-8E79-3D69D8477DE4": "Linux filesystem",
	"0657FD6D-A4AB-43C4-84E5-0933C84B4F4F": "Linux swap",
	"E6D6D379-F507-44C2-A23C-238F2A3DF928": "Linux LVM",
	"A19D880F-05FC-4D3B-A006-743F0F84911E": "Linux RAID",
	"CA7D7CCB-63ED-4C53-861C-1742536059CC": "Linux LUKS",
	"933AC7E1-2EB4-4F13-B844-0E14E2AEF915": "Linux home",
	"3B8F8425-20E0-4F3B-907F-1A25A76F98E8": "Linux server data",
	"BC13C2FF-59E6-4262-A352-B275FD6F7172": "Linux extended boot",
	"4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709": "Linux root (x86-64)",
	"44479540-F297-41B2-9AF7-D131D5F0458A": "Linux root (x86)",
	"B921B045-1DF0-41C3-AF44-4C6F280D3FAE": "Linux root (ARM-64)",
	"8DA63339-0007-60C0-C436-083AC8230908": "Linux reserved",
	"48465300-0000-11AA-AA11-00306543ECAC": "Apple HFS/HFS+",
	"7C3457EF-0000-11AA-AA11-00306543ECAC": "Apple APFS",
	"426F6F74-0000-11AA-AA11-00306543ECAC": "Apple boot",
	"516E7CB4-6ECF-11D6-8FF8-00022D09712B": "FreeBSD data",
	"83BD6B9D-7F41-11DC-BE0B-001560B84F0F": "FreeBSD boot",
	"516E7CB5-6ECF-11D6-8FF8-00022D09712B": "FreeBSD swap",
	"516E7CB6-6ECF-11D6-8FF8-00022D09712B": "FreeBSD UFS",
	"516E7CBA-6ECF-11D6-8FF8-00022D09712B": "FreeBSD ZFS",
	"6A898CC3-1DD2-11B2-99A6-080020736631": "Solaris /usr & Apple ZFS",
	"FE3A2A5D-4F32-41A7-B725-ACCC3285A309": "ChromeOS kernel",
	"3CB8E202-3B7E-47DD-8A3C-7FF2A13CFCEC": "ChromeOS root fs",
}

var mbrNames = map[string]string{
	"0x01": "FAT12",
	"0x04": "FAT16 <32M",
	"0x05": "Extended",
	"0x06": "FAT16",
	"0x07": "HPFS/NTFS/exFAT",
	"0x0b": "W95 FAT32",
	"0x0c": "W95 FAT32 (LBA)",
	"0x0e": "W95 FAT16 (LBA)",
	"0x0f": "W95 Ext'd (LBA)",
	"0x11": "Hidden FAT12",
	"0x12": "Compaq diagnostics",
	"0x14": "Hidden FAT16 <32M",
	"0x16": "Hidden FAT16",
	"0x17": "Hidden HPFS/NTFS",
	"0x1b": "Hidden W95 FAT32",
	"0x1c": "Hidden W95 FAT32 (LBA)",
	"0x1e": "Hidden W95 FAT16 (LBA)",
	"0x27": "Hidden NTFS WinRE",
	"0x42": "SFS",
	"0x82": "Linux swap / Solaris",
	"0x83": "Linux",
	"0x85": "Linux extended",
	"0x8e": "Linux LVM",
	"0xa5": "FreeBSD",
	"0xa6": "OpenBSD",
	"0xa8": "Darwin UFS",
	"0xa9": "NetBSD",
	"0xaf": "HFS / HFS+",
	"0xee": "GPT",
	"0xef": "EFI (FAT-12/16/32)",
	"0xfd": "Linux raid autodetect",
}
